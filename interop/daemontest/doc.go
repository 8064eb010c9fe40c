// Package daemontest runs "microlink up" as a person or a service
// manager would, next to a real tailscaled in TUN mode, and checks what
// the daemon serves the host: MagicDNS, the SOCKS5 and HTTP proxies
// (driven by curl), whois, ip, status --json read by a script written for
// tailscale's output, down and up, shields up, the status page in a real
// headless Chromium and /metrics read by Prometheus' own text parser, bad
// input on every port, and the systemd unit's command line with its stop
// on SIGTERM.
package daemontest
