//go:build !go1.27

package chachapoly

import (
	"crypto/cipher"
	"crypto/hpke"
	"reflect"
	"unsafe"
)

// New returns a ChaCha20-Poly1305 AEAD with a 32-byte key.
func New(key []byte) (cipher.AEAD, error) { return newStd(key) }

// newStd is the standard library's constructor, taken from crypto/hpke's
// ChaCha20-Poly1305 (a pointer to a struct whose field "new" it is).
var newStd = func() func([]byte) (cipher.AEAD, error) {
	v := reflect.ValueOf(hpke.ChaCha20Poly1305())
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		f := v.Elem().FieldByName("new")
		if f.IsValid() && f.Type() == reflect.TypeFor[func([]byte) (cipher.AEAD, error)]() {
			if fn := *(*func([]byte) (cipher.AEAD, error))(unsafe.Pointer(f.UnsafeAddr())); fn != nil {
				return fn
			}
		}
	}
	panic("chachapoly: crypto/hpke of this toolchain holds no ChaCha20-Poly1305 constructor; build with the x/crypto one (see the package doc)")
}()
