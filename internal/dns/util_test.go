package dns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

func itoa(i int) string                          { return strconv.Itoa(i) }
func readFull(c net.Conn, b []byte) (int, error) { return io.ReadFull(c, b) }
func newReader(c net.Conn) *bufio.Reader         { return bufio.NewReader(c) }
func fmtAddrs(a []netip.Addr) string             { return fmt.Sprint(a) }
func fmtAddrs2(a []netip.AddrPort) string        { return fmt.Sprint(a) }
