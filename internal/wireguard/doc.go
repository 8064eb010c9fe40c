// Package wireguard implements the WireGuard protocol
// (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s) as Tailscale uses it: static keys
// are node keys, the pre-shared key is all zeros, and the transport that
// carries messages between peers is supplied by the caller.
//
// A Device owns the local static key and a set of peers, each with the IP
// prefixes it may use. Outbound IP packets are routed to a peer by
// destination address, encrypted and handed to Config.Send. Inbound
// WireGuard messages are given to Device.Receive; decrypted IP packets whose
// source address belongs to the sending peer are handed to Config.Deliver.
//
// The device is built for small machines. A configured peer costs a few
// dozen bytes until it is used; its handshake and session state are created
// on first use and released when its keys expire. Packet buffers come from a
// small bounded pool and the per-packet paths do not allocate. All timers
// of a device are served by one goroutine.
package wireguard
