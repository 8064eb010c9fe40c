// Package lab runs a private tailnet of real Tailscale code on one machine,
// offline, for interoperability tests.
//
// Start creates the servers of the tailnet, all in-process and on
// 127.0.0.1 (or Options.ListenAddr): a control server (tailscale.com's testcontrol, speaking
// ts2021 and requiring an auth key), a DERP server over TLS with an
// unverified certificate, and a STUN server. Nodes receive a DERP map with
// only that one region, so nothing reaches the internet.
//
// Peers join in two ways:
//
//   - Lab.StartTailscaled runs the real tailscaled and tailscale binaries,
//     built from tailscale.com at TailscaleVersion (see Binaries), either
//     with userspace networking or, as root, with a real TUN device.
//   - StartTSNet runs an embedded tsnet client in the test process.
//
// A node under test joins with Lab.ControlURL and Lab.AuthKey and should
// then see those peers, ping them and be pinged by them. Lab.Control
// drives the control plane directly (pushing map responses or ping
// requests), and Lab.RestartControl drops every control connection to
// exercise reconnection. TSOptions.ControlURL points a tailscaled at
// another control server instead, such as Headscale, whose DERP map may
// name the lab's DERP and STUN servers (Lab.DERPMap).
//
// # Network namespaces
//
// Test binaries of packages that use the lab call RunInNetns from
// TestMain. As root, it moves the whole test binary into a fresh network
// namespace with only a loopback interface, so tests cannot disturb the
// host and may use TUN mode: with a TUN tailscaled in the namespace, OS
// commands started with Command (ping, for example) and ordinary sockets
// of the test reach 100.x addresses through the real client. Without root
// the tests run in place and TUN mode is unavailable (TUNAvailable says
// why).
//
// Tests may build networks of their own inside that namespace: child
// namespaces joined by veth pairs, with NAT routers made with nftables.
// Options.ListenAddr then puts the lab's servers on an address the child
// namespaces can reach, and TSOptions.Netns runs a tailscaled (TUN mode
// included, one per namespace) and its tailscale command inside a child
// namespace. A tailscaled in the test's
// own namespace then logs in through a loopback forwarder, since
// tailscaled loses an http:// control server on a public address when it
// reconnects.
//
// # Binaries
//
// Set MICROLINK_TS_BIN to a directory holding prebuilt tailscaled and
// tailscale (build-tailscale.sh in the interop module makes one);
// otherwise the first test that needs them builds them into a cache
// directory, which takes a few minutes once.
//
// # Programs
//
// The lab's functions take a T, which *testing.T satisfies. Programs such
// as demos use a Runner instead, call the lab inside Runner.Do to turn a
// fatal error into an error value, and stop everything with Runner.Close;
// ReexecInNetns is their RunInNetns.
//
// Everything a lab starts is stopped by the test's Cleanup, or by the
// Runner's Close. Logs of the in-process servers go to Options.Logf; each
// tailscaled logs to a file whose tail is printed when the test (or the
// Runner) has failed.
package lab
