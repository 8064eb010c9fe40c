package tunnel

// MaxPacket is the largest IP packet the stack builds or accepts: Tailscale's
// default tunnel MTU.
const MaxPacket = 1280
