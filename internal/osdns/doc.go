// Package osdns points the host's resolver at MagicDNS and restores it:
// "--accept-dns" in TUN mode.
//
// Two ways, chosen once when the Manager starts:
//
//   - systemd-resolved, when it runs and owns /etc/resolv.conf: the TUN
//     device gets the resolver's address as its DNS server, the tailnet's
//     search domain, and routing domains for the tailnet's names, its
//     reverse zones, split-DNS suffixes and extra records (and "~.", all
//     names, when control names default resolvers), set with the
//     resolvectl command rather than over D-Bus, which would need a
//     D-Bus client in the binary. resolved forgets them when the device
//     goes, even after a killed run; Close reverts them at once.
//   - /etc/resolv.conf written directly otherwise: the file (or the
//     symbolic link) it replaces is kept in a backup file, which Close
//     puts back, and which Recover puts back at the next start after a
//     killed run. A resolv.conf that is a mount point (a container's,
//     or one that "ip netns exec" mounts from /etc/netns/NAME) is
//     rewritten in place, as it cannot be replaced. The nameservers of
//     the replaced file are what the resolver forwards other names to.
//
// Other programs that manage resolv.conf (NetworkManager, resolvconf, a
// DHCP client) may write it again; the Manager does not watch it. A file
// that is not microlink's when Close runs is left as it is.
package osdns
