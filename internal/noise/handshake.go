package noise

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/microlink-go/microlink/internal/blake2s"
	"github.com/microlink-go/microlink/internal/key"
)

// Message types and sizes of the ts2021 Noise protocol.
const (
	msgTypeInitiation = 1
	msgTypeResponse   = 2
	msgTypeError      = 3
	msgTypeRecord     = 4

	// InitiationSize is the size of the initiation message: version (2),
	// type (1), length (2), ephemeral key (32), sealed machine key (48)
	// and an empty sealed payload (16).
	InitiationSize = 101
	// ResponseSize is the size of the response message: type (1),
	// length (2), ephemeral key (32) and an empty sealed payload (16).
	ResponseSize = 51

	initiationHeaderLen = 5
	headerLen           = 3
)

const (
	protocolName   = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
	prologuePrefix = "Tailscale Control Protocol v"
)

// Prologue returns the Noise prologue for a protocol version.
func Prologue(version uint16) []byte {
	return strconv.AppendUint([]byte(prologuePrefix), uint64(version), 10)
}

// ServerError is the text of an error message (type 3) sent by the server
// instead of a handshake response. It is unauthenticated: treat it as a hint.
type ServerError string

func (e ServerError) Error() string { return "noise: server error: " + strconv.Quote(string(e)) }

// errHandshake is returned when a peer's handshake message fails
// authentication or is malformed.
var errHandshake = errors.New("noise: handshake failed")

// Initiator is the client side of a handshake in progress. It holds the
// state between sending the initiation message and reading the response.
type Initiator struct {
	s       symmetricState
	machine key.Private
	eph     key.Private
	server  key.MachinePublic
	version uint16
	msg     [InitiationSize]byte
	done    bool
}

// NewInitiator starts a handshake from the machine key to the server's
// static key and builds the initiation message.
func NewInitiator(machine key.Private, server key.MachinePublic, version uint16) (*Initiator, error) {
	return newInitiator(machine, server, version, key.NewPrivate())
}

func newInitiator(machine key.Private, server key.MachinePublic, version uint16, eph key.Private) (*Initiator, error) {
	h := &Initiator{machine: machine, eph: eph, server: server, version: version}
	s := &h.s
	s.init()
	s.mixHash(Prologue(version))
	s.mixHash(server[:])

	m := h.msg[:]
	binary.BigEndian.PutUint16(m[0:2], version)
	m[2] = msgTypeInitiation
	binary.BigEndian.PutUint16(m[3:5], InitiationSize-initiationHeaderLen)

	ephPub := eph.Public()
	copy(m[5:37], ephPub[:])
	s.mixHash(ephPub[:])
	if err := s.mixDH(eph, key.Public(server)); err != nil {
		return nil, err
	}
	machinePub := machine.Public()
	s.encryptAndHash(m[37:37], machinePub[:])
	if err := s.mixDH(machine, key.Public(server)); err != nil {
		return nil, err
	}
	s.encryptAndHash(m[85:85], nil)
	return h, nil
}

// Message returns the 101-byte initiation message.
func (h *Initiator) Message() []byte { return h.msg[:] }

// Finish reads the server's response from conn, completes the handshake
// and returns the record-layer connection wrapping conn. An error message
// from the server is returned as a [ServerError]. Finish may be called
// only once.
func (h *Initiator) Finish(conn net.Conn) (*Conn, error) {
	if h.done {
		return nil, errors.New("noise: handshake already finished")
	}
	h.done = true
	var resp [ResponseSize]byte
	if _, err := io.ReadFull(conn, resp[:headerLen]); err != nil {
		return nil, fmt.Errorf("noise: reading response header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(resp[1:3]))
	switch resp[0] {
	case msgTypeResponse:
	case msgTypeError:
		msg := make([]byte, n)
		if _, err := io.ReadFull(conn, msg); err != nil {
			return nil, fmt.Errorf("noise: reading server error: %w", err)
		}
		return nil, ServerError(msg)
	default:
		return nil, fmt.Errorf("noise: unexpected handshake message type %d", resp[0])
	}
	if n != ResponseSize-headerLen {
		return nil, fmt.Errorf("noise: response length %d, want %d", n, ResponseSize-headerLen)
	}
	if _, err := io.ReadFull(conn, resp[headerLen:]); err != nil {
		return nil, fmt.Errorf("noise: reading response: %w", err)
	}
	return h.finish(conn, resp[:])
}

func (h *Initiator) finish(conn net.Conn, resp []byte) (*Conn, error) {
	s := &h.s
	var re key.Public
	copy(re[:], resp[3:35])
	s.mixHash(re[:])
	if err := s.mixDH(h.eph, re); err != nil { // ee
		return nil, err
	}
	if err := s.mixDH(h.machine, re); err != nil { // se
		return nil, err
	}
	if err := s.decryptAndHash(nil, resp[35:51]); err != nil {
		return nil, err
	}
	send, recv := s.split()
	return newConn(conn, h.version, h.server, s.h, send, recv), nil
}

// Client runs the initiator side of a handshake over conn: it writes the
// initiation message and reads the response.
func Client(conn net.Conn, machine key.Private, server key.MachinePublic, version uint16) (*Conn, error) {
	h, err := NewInitiator(machine, server, version)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(h.Message()); err != nil {
		return nil, err
	}
	return h.Finish(conn)
}

// Accept runs the responder side of a handshake over conn with the server's
// static key. If init is nil the initiation message is read from conn;
// otherwise init is the initiation message received out of band (as in the
// HTTP upgrade). The client's machine key is available from [Conn.Peer].
func Accept(conn net.Conn, server key.Private, init []byte) (*Conn, error) {
	return accept(conn, server, init, key.NewPrivate())
}

func accept(conn net.Conn, server key.Private, init []byte, eph key.Private) (*Conn, error) {
	var m [InitiationSize]byte
	if init == nil {
		if _, err := io.ReadFull(conn, m[:]); err != nil {
			return nil, fmt.Errorf("noise: reading initiation: %w", err)
		}
	} else if len(init) != InitiationSize {
		WriteError(conn, "wrong handshake initiation size")
		return nil, fmt.Errorf("noise: initiation is %d bytes, want %d", len(init), InitiationSize)
	} else {
		copy(m[:], init)
	}
	if m[2] != msgTypeInitiation || binary.BigEndian.Uint16(m[3:5]) != InitiationSize-initiationHeaderLen {
		WriteError(conn, "malformed handshake initiation")
		return nil, errors.New("noise: malformed initiation")
	}
	version := binary.BigEndian.Uint16(m[0:2])

	var s symmetricState
	s.init()
	s.mixHash(Prologue(version))
	serverPub := server.Public()
	s.mixHash(serverPub[:])
	var ie key.Public
	copy(ie[:], m[5:37])
	s.mixHash(ie[:])
	if err := s.mixDH(server, ie); err != nil { // es
		return nil, err
	}
	var machine key.Public
	if err := s.decryptAndHash(machine[:0], m[37:85]); err != nil {
		return nil, err
	}
	if err := s.mixDH(server, machine); err != nil { // ss
		return nil, err
	}
	if err := s.decryptAndHash(nil, m[85:101]); err != nil {
		return nil, err
	}

	var r [ResponseSize]byte
	r[0] = msgTypeResponse
	binary.BigEndian.PutUint16(r[1:3], ResponseSize-headerLen)
	ephPub := eph.Public()
	copy(r[3:35], ephPub[:])
	s.mixHash(ephPub[:])
	if err := s.mixDH(eph, ie); err != nil { // ee
		return nil, err
	}
	if err := s.mixDH(eph, machine); err != nil { // se
		return nil, err
	}
	s.encryptAndHash(r[35:35], nil)
	recv, send := s.split()
	if _, err := conn.Write(r[:]); err != nil {
		return nil, err
	}
	return newConn(conn, version, key.MachinePublic(machine), s.h, send, recv), nil
}

// WriteError sends a handshake error message (type 3) carrying msg.
func WriteError(w io.Writer, msg string) error {
	if len(msg) > 1<<16-1 {
		msg = msg[:1<<16-1]
	}
	b := make([]byte, headerLen+len(msg))
	b[0] = msgTypeError
	binary.BigEndian.PutUint16(b[1:3], uint16(len(msg)))
	copy(b[3:], msg)
	_, err := w.Write(b)
	return err
}

// symmetricState is the Noise SymmetricState: the handshake hash h, the
// chaining key ck and the one-shot key k produced by the last mixDH.
type symmetricState struct {
	h, ck [blake2s.Size]byte
	k     [chacha20poly1305.KeySize]byte
}

func newBLAKE2s() hash.Hash {
	h, _ := blake2s.New256(nil) // only fails for keys longer than 32 bytes
	return h
}

func (s *symmetricState) init() {
	s.h = blake2s.Sum256([]byte(protocolName))
	s.ck = s.h
}

func (s *symmetricState) mixHash(b []byte) {
	d := newBLAKE2s()
	d.Write(s.h[:])
	d.Write(b)
	d.Sum(s.h[:0])
}

// mixDH mixes X25519(priv, pub) into the chaining key and derives k.
func (s *symmetricState) mixDH(priv key.Private, pub key.Public) error {
	dh, err := priv.SharedSecret(pub)
	if err != nil {
		return fmt.Errorf("%w: %v", errHandshake, err)
	}
	r := hkdf.New(newBLAKE2s, dh[:], s.ck[:], nil)
	io.ReadFull(r, s.ck[:])
	io.ReadFull(r, s.k[:])
	return nil
}

func (s *symmetricState) aead() cipher.AEAD {
	a, _ := chacha20poly1305.New(s.k[:]) // the key size is always right
	s.k = [chacha20poly1305.KeySize]byte{}
	return a
}

// encryptAndHash appends the sealed plaintext to dst and mixes it into h.
func (s *symmetricState) encryptAndHash(dst, plaintext []byte) {
	var nonce [chacha20poly1305.NonceSize]byte
	ct := s.aead().Seal(dst, nonce[:], plaintext, s.h[:])
	s.mixHash(ct[len(dst):])
}

// decryptAndHash appends the opened ciphertext to dst and mixes the
// ciphertext into h.
func (s *symmetricState) decryptAndHash(dst, ciphertext []byte) error {
	var nonce [chacha20poly1305.NonceSize]byte
	if _, err := s.aead().Open(dst, nonce[:], ciphertext, s.h[:]); err != nil {
		return errHandshake
	}
	s.mixHash(ciphertext)
	return nil
}

// split derives the initiator-to-responder and responder-to-initiator
// transport ciphers.
func (s *symmetricState) split() (c1, c2 cipher.AEAD) {
	var k1, k2 [chacha20poly1305.KeySize]byte
	r := hkdf.New(newBLAKE2s, nil, s.ck[:], nil)
	io.ReadFull(r, k1[:])
	io.ReadFull(r, k2[:])
	c1, _ = chacha20poly1305.New(k1[:])
	c2, _ = chacha20poly1305.New(k2[:])
	return c1, c2
}
