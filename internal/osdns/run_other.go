//go:build !unix

package osdns

import "errors"

func run(path string, args ...string) error {
	return errors.New("osdns: running " + path + " is not supported on this system")
}
