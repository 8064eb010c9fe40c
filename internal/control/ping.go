package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
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
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if !pr.URLIsNoise {
		req, err := http.NewRequestWithContext(ctx, method, pr.URL, rd)
		if err != nil {
			return err
		}
		return drain(c.hc.Do(req))
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
	req, err := http.NewRequestWithContext(ctx, method, nc.URL(u.RequestURI()), rd)
	if err != nil {
		return err
	}
	return drain(nc.Do(req))
}

func drain(res *http.Response, err error) error {
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, maxBody))
	res.Body.Close()
	return nil
}

// answerC2N handles a control-to-node HTTP request carried in a ping's
// payload and returns the serialized HTTP response. Only /echo is served.
func answerC2N(payload []byte) ([]byte, error) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(payload)))
	if err != nil {
		return nil, err
	}
	res := &http.Response{
		StatusCode: http.StatusNotFound,
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
	}
	var body []byte
	if req.URL.Path == "/echo" {
		body, err = io.ReadAll(io.LimitReader(req.Body, maxBody))
		if err != nil {
			return nil, err
		}
		res.StatusCode = http.StatusOK
	} else {
		body = []byte("not found\n")
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	var out bytes.Buffer
	if err := res.Write(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
