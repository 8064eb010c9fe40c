package derptest

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	tsderp "tailscale.com/derp"
	tskey "tailscale.com/types/key"
)

// fakeRelay is a minimal DERP server built from the reference framing and
// key code, for behaviour the real server never shows, such as pinging
// its clients. It serves one client at a time.
type fakeRelay struct {
	t     *testing.T
	priv  tskey.NodePrivate
	http  *httptest.Server
	pongs chan [8]byte

	mu sync.Mutex
	bw *bufio.Writer // of the current client
}

func startFakeRelay(t *testing.T) *fakeRelay {
	f := &fakeRelay{t: t, priv: tskey.NewNode(), pongs: make(chan [8]byte, 4)}
	f.http = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.http.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	f.http.StartTLS()
	t.Cleanup(f.http.Close)
	return f
}

func (f *fakeRelay) relay() *relay {
	return &relay{t: f.t, http: f.http, addr: f.http.Listener.Addr().String()}
}

func (f *fakeRelay) serve(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Upgrade") != "DERP" {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if err := f.handshake(conn, brw); err != nil {
		f.t.Errorf("fake relay handshake: %v", err)
		return
	}
	for {
		ft, n, err := tsderp.ReadFrameHeader(brw.Reader)
		if err != nil {
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(brw, p); err != nil {
			return
		}
		if ft == tsderp.FramePong && len(p) == 8 {
			f.pongs <- [8]byte(p)
		}
	}
}

func (f *fakeRelay) handshake(conn net.Conn, brw *bufio.ReadWriter) error {
	pub := f.priv.Public()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"+
		"Derp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n", pub.UntypedHexString())
	f.mu.Lock()
	f.bw = brw.Writer
	err := tsderp.WriteFrame(brw.Writer, tsderp.FrameServerKey, pub.AppendTo([]byte(tsderp.Magic)))
	f.mu.Unlock()
	if err != nil {
		return err
	}
	n, err := tsderp.ReadFrameTypeHeader(brw.Reader, tsderp.FrameClientInfo)
	if err != nil {
		return err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(brw, p); err != nil || len(p) < 32 {
		return fmt.Errorf("ClientInfo: %v", err)
	}
	var clientPub tskey.NodePublic
	if err := clientPub.UnmarshalText([]byte(fmt.Sprintf("nodekey:%x", p[:32]))); err != nil {
		return err
	}
	msg, ok := f.priv.OpenFrom(clientPub, p[32:])
	if !ok {
		return fmt.Errorf("ClientInfo box does not open")
	}
	var info tsderp.ClientInfo
	if err := json.Unmarshal(msg, &info); err != nil {
		return err
	}
	if info.Version != 2 || !info.CanAckPings {
		return fmt.Errorf("ClientInfo %+v", info)
	}
	si, _ := json.Marshal(tsderp.ServerInfo{Version: 2})
	f.mu.Lock()
	defer f.mu.Unlock()
	return tsderp.WriteFrame(brw.Writer, tsderp.FrameServerInfo, f.priv.SealTo(clientPub, si))
}

// sendPing sends a Ping frame to the connected client.
func (f *fakeRelay) sendPing(data [8]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bw == nil {
		return fmt.Errorf("no client")
	}
	return tsderp.WriteFrame(f.bw, tsderp.FramePing, data[:])
}
