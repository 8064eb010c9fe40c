package sockmark

import "syscall"

func setMark(fd uintptr, m uint32) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(m))
}
