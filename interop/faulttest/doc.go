// Package faulttest runs a microlink node through the faults a device in
// the field meets, against the real Tailscale code (testcontrol, the DERP
// server and real tailscaled peers from tailscale.com v1.102.5): control
// restarted again and again, control black-holed for 90 s, control
// restarted with an empty database, the DERP server restarted, node keys
// expired by control with and without an auth key, and the node and the
// real peer restarted with their state. Each test checks
// that traffic with a real peer resumes, and how fast, with bounds taken
// from the field requirements; and that the node logs in only when it
// must, counting register requests both in microlink's Stats and at the
// server.
//
// The tests run inside a network namespace of their own when run as root
// (lab.RunInNetns); the black-hole test needs nftables there and runs in
// parallel with the others, as it mostly waits.
package faulttest
