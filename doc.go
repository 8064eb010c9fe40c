// Package microlink is a small Tailscale client: a Node joins a tailnet
// (Tailscale's hosted control plane or Headscale), gets a 100.x address and
// exchanges datagrams with every other device of the tailnet over WireGuard,
// directly when the network allows and through DERP relays when it does not.
//
// A minimal program:
//
//	n, err := microlink.New(microlink.Config{AuthKey: key, Hostname: "sensor-1", StateDir: "/var/lib/microlink"})
//	if err != nil { ... }
//	if err := n.Start(ctx); err != nil { ... }
//	defer n.Close()
//	c, err := n.ListenUDP(9000)
//
// Node.Dial connects by MagicDNS name ("laptop:22") over TCP or UDP, through
// the node's own resolver; Node.WhoIs tells a server which node, user and
// tags are behind a caller's address. For HTTP, the httpclient package gives
// an *http.Client that dials through a node.
//
// By default the node is an endpoint of its own in the program (userspace
// mode): only its sockets use the tailnet. With Config.TUN (Linux, root)
// it gives the whole host a TUN device instead, and the host's own IP stack
// serves its addresses. Peers' subnet routes and exit nodes are used only
// when Config.AcceptRoutes and Config.ExitNode ask for them;
// Config.AdvertiseRoutes makes the node a subnet router or exit node.
//
// microlink keeps its memory small: it implements the WireGuard data path
// itself, keeps per-peer state only for peers in use and stores the netmap in
// a compact form, so that it fits devices with tens of megabytes of RAM.
package microlink
