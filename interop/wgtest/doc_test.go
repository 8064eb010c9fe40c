// Package wgtest checks microlink's WireGuard device against wireguard-go
// in one process, connected through an in-memory conn.Bind and a
// channel-backed tun.Device.
package wgtest
