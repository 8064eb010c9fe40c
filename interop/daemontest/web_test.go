package daemontest

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// chromium returns the path of a headless-capable Chromium. scripts/test.sh
// installs Debian's; without it the test fails in CI and is skipped
// elsewhere.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium: scripts/test.sh installs Debian's chromium")
	}
	t.Skip("no chromium (apt-get install chromium)")
	return ""
}

// runChromium runs headless Chromium with the flags that work on this
// closed network, plus args.
func runChromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

func checkWeb(t *testing.T, d *daemon, w *world, webURL string) {
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(url string, hdr ...string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	// Without the token, or with a wrong one: 401, and nothing of the page.
	for _, tc := range [][]string{{webURL}, {webURL + "?token=wrong"}, {webURL + "metrics", "Authorization", "Bearer wrong"}, {webURL + "metrics"}} {
		code, body := get(tc[0], tc[1:]...)
		if code != 401 || strings.Contains(body, "real-peer") {
			t.Errorf("%v: %d %.80q", tc, code, body)
		}
	}

	// /metrics, read by Prometheus' own text parser.
	code, body := get(webURL+"metrics", "Authorization", "Bearer tok")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("Prometheus parser: %v\n%s", err, body)
	}
	for _, name := range []string{"microlink_info", "microlink_state", "microlink_peers", "microlink_bytes_total",
		"microlink_path_bytes_total", "microlink_handshakes_total", "microlink_peer_rx_bytes_total",
		"microlink_peer_tx_bytes_total", "microlink_peer_path", "microlink_peer_handshake_age_seconds",
		"microlink_home_derp_region", "microlink_map_updates_total"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if f := fams["microlink_peers"]; f != nil && f.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("microlink_peers = %v", f.GetMetric()[0].GetGauge().GetValue())
	}
	found := false
	for _, m := range fams["microlink_peer_rx_bytes_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["peer"] == "real-peer" && labels["ip"] == w.ts.IPv4().String() && m.GetCounter().GetValue() > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no rx bytes for real-peer in /metrics:\n%s", body)
	}
	for _, m := range fams["microlink_state"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "Connected" && m.GetGauge().GetValue() != 1 {
			t.Errorf("microlink_state{state=Connected} = %v", m.GetGauge().GetValue())
		}
	}

	// The page in a real browser: its DOM, then a screenshot.
	dom := string(runChromium(t, "--dump-dom", webURL+"?token=tok"))
	for _, want := range []string{`<td>real-peer</td>`, "<td>" + w.ts.IPv4().String() + "</td>", `id="state" class="ok">Connected<`, `http-equiv="refresh"`, "ml-daemon." + magicDomain} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, "<script") {
		t.Error("the page has a script")
	}
	shot := filepath.Join(t.TempDir(), "status.png")
	runChromium(t, "--screenshot="+shot, "--window-size=1200,700", webURL+"?token=tok")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	checkScreenshot(t, img)
	if dir := os.Getenv("MICROLINK_SCREENSHOT_DIR"); dir != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(dir, "status-page.png"), b, 0o644)
	}
}

// checkScreenshot checks that the page rendered: the window's size, text
// on a light background, and the green of the "Connected" state.
func checkScreenshot(t *testing.T, img image.Image) {
	t.Helper()
	b := img.Bounds()
	if b.Dx() != 1200 || b.Dy() != 700 {
		t.Errorf("screenshot is %dx%d", b.Dx(), b.Dy())
	}
	colors := map[uint32]int{}
	dark, green := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			colors[r<<16|g<<8|bl]++
			if r+g+bl < 200 {
				dark++
			}
			if r < 60 && g > 100 && g < 150 && bl < 80 {
				green++
			}
		}
	}
	if len(colors) < 20 || dark < 200 || green < 10 {
		t.Errorf("screenshot looks blank or wrong: %d colors, %d dark pixels, %d green", len(colors), dark, green)
	}
}
