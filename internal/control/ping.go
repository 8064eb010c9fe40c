package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/ts2021"
)

// pingTimeout bounds the answer to one PingRequest.
const pingTimeout = 15 * time.Second

// handlePing answers a PingRequest in the background, ignoring a repeat
// of the last URL.
func (c *Client) handlePing(pr *tailcfg.PingRequest) {
	if pr.URL == "" {
		return
	}
	c.mu.Lock()
	if pr.URL == c.lastPingURL || c.closed {
		c.mu.Unlock()
		return
	}
	c.lastPingURL = pr.URL
	c.mu.Unlock()
	p := *pr // the caller may still read the original
	pr = &p

	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(c.ctx, pingTimeout)
		defer cancel()
		if err := c.answerPing(ctx, pr); err != nil {
			c.log.Info("control: answering ping request", "types", pr.Types, "err", err)
		}
	})
}

func (c *Client) answerPing(ctx context.Context, pr *tailcfg.PingRequest) error {
	switch pr.Types {
	case "":
		return c.pingRequest(ctx, pr, "HEAD", nil)
	case "c2n":
		body, err := answerC2N(pr.Payload)
		if err != nil {
			return err
		}
		pr.URLIsNoise = true // c2n answers always go over Noise
		return c.pingRequest(ctx, pr, "POST", body)
	}
	if c.opts.Pinger == nil || !pr.IP.IsValid() {
		return nil
	}
	for _, typ := range strings.Split(pr.Types, ",") {
		start := time.Now()
		res, err := c.opts.Pinger.Ping(ctx, pr.IP, typ)
		if res == nil {
			res = &tailcfg.PingResponse{}
		}
		res.Type = typ
		if res.IP == "" {
			res.IP = pr.IP.String()
		}
		if err != nil && res.Err == "" {
			res.Err = err.Error()
		}
		if res.Err == "" && res.LatencySeconds == 0 {
			res.LatencySeconds = time.Since(start).Seconds()
		}
		b, _ := json.Marshal(res)
		if err := c.pingRequest(ctx, pr, "POST", b); err != nil {
			return err
		}
	}
	return nil
}

// pingRequest sends method to pr.URL, over Noise when pr.URLIsNoise.
func (c *Client) pingRequest(ctx context.Context, pr *tailcfg.PingRequest, method string, body []byte) error {
	if !pr.URLIsNoise {
		res, err := c.hc.Do(ctx, method, pr.URL, nil, body)
		if err != nil {
			return err
		}
		return drain(res.Body)
	}
	nc, err := c.noiseClient(ctx)
	if err != nil {
		return err
	}
	u, err := url.Parse(pr.URL)
	if err != nil {
		return err
	}
	// Same server, same connection: only path and query matter.
	req := &ts2021.Request{Method: method, Path: u.RequestURI()}
	if body != nil {
		req.Body = bytes.NewReader(body)
	}
	res, err := nc.RoundTrip(ctx, req)
	if err != nil {
		return err
	}
	return drain(res.Body)
}

func drain(body io.ReadCloser) error {
	io.Copy(io.Discard, io.LimitReader(body, maxBody))
	body.Close()
	return nil
}

// answerC2N handles a control-to-node HTTP request carried in a ping's
// payload and returns the serialized HTTP response. Only /echo is served.
func answerC2N(payload []byte) ([]byte, error) {
	req, err := h1.ReadRequest(bufio.NewReader(bytes.NewReader(payload)), maxBody)
	if err != nil {
		return nil, err
	}
	u, err := url.ParseRequestURI(req.Target)
	if err != nil {
		return nil, err
	}
	status, body := 404, []byte("not found\n")
	if u.Path == "/echo" {
		status, body = 200, req.Body
	}
	var out bytes.Buffer
	if err := h1.WriteResponse(&out, status, nil, body); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
