package tcp

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func keepAliveConfig() Config {
	cfg := fastConfig()
	cfg.KeepAliveIdle = 100 * time.Millisecond
	cfg.KeepAliveInterval = 50 * time.Millisecond
	cfg.KeepAliveCount = 3
	return cfg
}

func TestKeepAliveFindsVanishedPeer(t *testing.T) {
	a, b, l := pair(t, keepAliveConfig(), impairments{})
	c, _ := connect(t, a, b, addrA4, addrB4, 80)
	l.setImpairments(impairments{loss: 1}) // the peer vanishes without a word
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 10))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("idle read on a dead connection: %v, want ErrTimeout", err)
	}
	// Idle 100 ms, then three probes 50 ms apart and one more interval.
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("failed after %v", d)
	}
	if n := a.Stats().KeepAlives; n != 3 {
		t.Errorf("%d probes sent, want 3", n)
	}
}

func TestKeepAliveKeepsQuietConnection(t *testing.T) {
	a, b, _ := pair(t, keepAliveConfig(), impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	time.Sleep(700 * time.Millisecond) // several idle periods, probes answered
	// Whichever end probes first keeps the other from idling.
	if n := a.Stats().KeepAlives + b.Stats().KeepAlives; n < 3 {
		t.Fatalf("%d probes in 700 ms of silence", n)
	}
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("read after idle: %q %v", buf, err)
	}
}

func TestKeepAliveOff(t *testing.T) {
	a, b, l := pair(t, keepAliveConfig(), impairments{})
	c, _ := connect(t, a, b, addrA4, addrB4, 80)
	if err := c.SetKeepAlive(false); err != nil {
		t.Fatal(err)
	}
	l.setImpairments(impairments{loss: 1})
	c.SetReadDeadline(time.Now().Add(600 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, ErrTimeout) {
		t.Fatalf("read with keep-alives off: %v, want the read deadline", err)
	}
	if n := a.Stats().KeepAlives; n != 0 {
		t.Fatalf("%d probes sent with keep-alives off", n)
	}
	// And on again.
	c.SetKeepAlive(true)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("read with keep-alives back on: %v, want ErrTimeout", err)
	}
}

func TestSetKeepAlivePeriod(t *testing.T) {
	a, b, _ := pair(t, keepAliveConfig(), impairments{})
	c, _ := connect(t, a, b, addrA4, addrB4, 80)
	c.SetKeepAlivePeriod(45 * time.Second)
	c.mu.Lock()
	idle, interval, in := c.kaIdle, c.kaInterval, time.Duration(c.kaAt-c.s.now())
	c.mu.Unlock()
	if idle != 45*time.Second || interval != 45*time.Second || in < 40*time.Second {
		t.Fatalf("idle %v, interval %v, first check in %v", idle, interval, in)
	}
}
