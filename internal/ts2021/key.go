package ts2021

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// ErrServerTooOld is returned by FetchServerKey when the server has no
// Noise key.
var ErrServerTooOld = errors.New("ts2021: control server is too old; no noise key")

// FetchServerKey asks the control server at serverURL for its Noise public
// key (GET {serverURL}/key?v={capVer}). If hc is nil, a zero h1.Client
// is used; this request uses ordinary TLS verification.
func FetchServerKey(ctx context.Context, hc *h1.Client, serverURL string, capVer int) (key.MachinePublic, error) {
	if hc == nil {
		hc = &h1.Client{}
	}
	u := strings.TrimSuffix(serverURL, "/") + "/key?v=" + strconv.Itoa(capVer)
	res, err := hc.Do(ctx, "GET", u, nil, nil)
	if err != nil {
		return key.MachinePublic{}, fmt.Errorf("ts2021: fetching server key: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return key.MachinePublic{}, fmt.Errorf("ts2021: fetching server key: %w", err)
	}
	if res.Status != 200 {
		return key.MachinePublic{}, fmt.Errorf("ts2021: fetching server key: %d %s: %.200s", res.Status, res.Reason, strings.TrimSpace(string(body)))
	}
	return parseServerKey(body)
}

func parseServerKey(body []byte) (key.MachinePublic, error) {
	trimmed := strings.TrimSpace(string(body))
	if _, err := key.ParsePublicHex(trimmed); err == nil {
		return key.MachinePublic{}, ErrServerTooOld
	}
	var resp tailcfg.OverTLSPublicKeyResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return key.MachinePublic{}, fmt.Errorf("ts2021: decoding server key: %w", err)
	}
	if resp.PublicKey.IsZero() {
		return key.MachinePublic{}, ErrServerTooOld
	}
	return resp.PublicKey, nil
}
