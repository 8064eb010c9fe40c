package tunnel

import (
	"context"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

// PingTSMP sends a TSMP ping to dst through the tunnel and waits for the
// peer's Tailscale client to answer.
func (s *Stack) PingTSMP(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	var k pingKey
	k.tsmp = true
	randomBytes(k.data[:])
	return s.ping(ctx, dst, k, func(b []byte, src netip.Addr) (int, error) {
		return packet.BuildTSMPPing(b, src, dst, k.data)
	})
}

// PingICMP sends an ICMP echo request to dst through the tunnel and waits
// for the peer's IP stack to answer.
func (s *Stack) PingICMP(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	var k pingKey
	randomBytes(k.data[:4])
	id := binary.BigEndian.Uint16(k.data[0:])
	seq := binary.BigEndian.Uint16(k.data[2:])
	payload := []byte("microlink ping")
	return s.ping(ctx, dst, k, func(b []byte, src netip.Addr) (int, error) {
		return packet.BuildEchoRequest(b, src, dst, id, seq, payload)
	})
}

func (s *Stack) ping(ctx context.Context, dst netip.Addr, k pingKey, build func([]byte, netip.Addr) (int, error)) (time.Duration, error) {
	dst = dst.Unmap()
	src, ok := s.source(dst)
	if !ok {
		return 0, noSource(dst)
	}
	done := make(chan struct{})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	s.pings[k] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pings, k)
		s.mu.Unlock()
	}()

	bp := s.pool.Get()
	n, err := build(*bp, src)
	if err == nil {
		start := time.Now()
		err = s.output((*bp)[:n])
		s.pool.Put(bp)
		if err == nil {
			select {
			case <-done:
				return time.Since(start), nil
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-s.done:
				return 0, ErrClosed
			}
		}
		return 0, err
	}
	s.pool.Put(bp)
	return 0, err
}
