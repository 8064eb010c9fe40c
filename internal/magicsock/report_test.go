package magicsock

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/stun"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// newShiftingSTUNServer answers binding requests with the sender's port
// plus shift, as the other side of a NAT that maps each destination to a
// new port would see it.
func newShiftingSTUNServer(t *testing.T, shift uint16) *stunServer {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &stunServer{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, src, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			tx, err := stun.ParseBindingRequest(buf[:n])
			if err != nil {
				continue
			}
			s.requests.Add(1)
			seen := netip.AddrPortFrom(src.Addr(), src.Port()+shift)
			pc.WriteToUDPAddrPort(stun.Response(nil, tx, seen), src)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func TestNetcheckReport(t *testing.T) {
	for _, varies := range []bool{false, true} {
		shift := uint16(0)
		if varies {
			shift = 7
		}
		a1 := newShiftingSTUNServer(t, 0)
		a2 := newShiftingSTUNServer(t, shift)
		dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: stunRegion(1, a1), 2: stunRegion(2, a2)}}
		c := newNode(t, nil, Options{DERP: &fakeDERP{r: newFakeRelay(t)}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.Netcheck(ctx); err != ErrNoDERPMap {
			t.Fatalf("before a DERP map: %v", err)
		}
		c.SetDERPMap(dm)
		r, err := c.Netcheck(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !r.UDP || !r.MappingKnown || r.MappingVariesByDestIP != varies || len(r.RegionLatency) != 2 || r.PreferredDERP == 0 || !r.GlobalV4.IsValid() {
			t.Errorf("varies %v: report %+v", varies, r)
		}
		if last, ok := c.NetReport(); !ok || last.At != r.At {
			t.Errorf("NetReport %+v %v", last, ok)
		}
	}
}
