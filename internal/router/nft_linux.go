package router

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/netlink"
)

// nftTable is the name of the node's nftables tables, one in the ip and
// one in the ip6 family.
const nftTable = "microlink"

// nfAccept is the verdict NF_ACCEPT, a chain's policy.
const nfAccept = 1

// nftFamilies are the families the node's tables live in: inet would do
// for both on kernels since 5.2, but many routers run older ones.
var nftFamilies = []uint8{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6}

// nfgen is the nfgenmsg header every nf_tables message starts with.
func nfgen(family uint8, resID uint16) *netlink.Builder {
	return new(netlink.Builder).Bytes([]byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)})
}

func nftMsg(typ uint16) uint16 { return unix.NFNL_SUBSYS_NFTABLES<<8 | typ }

// batch wraps nf_tables messages in a transaction: the kernel applies
// all of them or none.
func batch(msgs ...netlink.Message) []netlink.Message {
	begin := nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES).Message(unix.NFNL_MSG_BATCH_BEGIN, 0)
	end := nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES).Message(unix.NFNL_MSG_BATCH_END, 0)
	begin.NoAck, end.NoAck = true, true
	return append(append([]netlink.Message{begin}, msgs...), end)
}

// ifname is an interface name as nf_tables compares it: IFNAMSIZ bytes,
// padded with NULs.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// snatMessages returns the messages that create, in one family, the
// node's table with a NAT chain at the postrouting hook and the rule
//
//	iifname "<dev>" oifname != "<dev>" masquerade
//
// which rewrites the source of packets the host forwards from the TUN
// device to any other interface to that interface's address.
func snatMessages(family uint8, dev string) []netlink.Message {
	table := nfgen(family, 0).
		String(unix.NFTA_TABLE_NAME, nftTable).
		BE32(unix.NFTA_TABLE_FLAGS, 0).
		Message(nftMsg(unix.NFT_MSG_NEWTABLE), netlink.FlagCreate)
	chain := nfgen(family, 0).
		String(unix.NFTA_CHAIN_TABLE, nftTable).
		String(unix.NFTA_CHAIN_NAME, "postrouting").
		Begin(unix.NFTA_CHAIN_HOOK).
		BE32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_POST_ROUTING).
		BE32(unix.NFTA_HOOK_PRIORITY, 100). // srcnat
		End().
		BE32(unix.NFTA_CHAIN_POLICY, nfAccept).
		String(unix.NFTA_CHAIN_TYPE, "nat").
		Message(nftMsg(unix.NFT_MSG_NEWCHAIN), netlink.FlagCreate)
	r := nfgen(family, 0).
		String(unix.NFTA_RULE_TABLE, nftTable).
		String(unix.NFTA_RULE_CHAIN, "postrouting").
		Begin(unix.NFTA_RULE_EXPRESSIONS)
	metaCmp := func(key uint32, op uint32) {
		r.Begin(unix.NFTA_LIST_ELEM).
			String(unix.NFTA_EXPR_NAME, "meta").
			Begin(unix.NFTA_EXPR_DATA).
			BE32(unix.NFTA_META_KEY, key).
			BE32(unix.NFTA_META_DREG, unix.NFT_REG_1).
			End().
			End()
		r.Begin(unix.NFTA_LIST_ELEM).
			String(unix.NFTA_EXPR_NAME, "cmp").
			Begin(unix.NFTA_EXPR_DATA).
			BE32(unix.NFTA_CMP_SREG, unix.NFT_REG_1).
			BE32(unix.NFTA_CMP_OP, op).
			Begin(unix.NFTA_CMP_DATA).
			Attr(unix.NFTA_DATA_VALUE, ifname(dev)).
			End().
			End().
			End()
	}
	metaCmp(unix.NFT_META_IIFNAME, unix.NFT_CMP_EQ)
	metaCmp(unix.NFT_META_OIFNAME, unix.NFT_CMP_NEQ)
	r.Begin(unix.NFTA_LIST_ELEM).String(unix.NFTA_EXPR_NAME, "masq").End()
	rule := r.End().Message(nftMsg(unix.NFT_MSG_NEWRULE), netlink.FlagCreate|netlink.FlagAppend)
	return []netlink.Message{table, chain, rule}
}

func delTable(family uint8) netlink.Message {
	return nfgen(family, 0).String(unix.NFTA_TABLE_NAME, nftTable).Message(nftMsg(unix.NFT_MSG_DELTABLE), 0)
}

// ErrNoNftables is wrapped by the error of a kernel without nf_tables (or
// its NAT and masquerade parts).
var ErrNoNftables = errors.New("router: the kernel offers no nftables NAT")

// addSNAT installs the masquerade rule for traffic from the TUN device
// dev, in both families unless ipv4Only.
func addSNAT(dev string, ipv4Only bool) error {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoNftables, err)
	}
	defer nl.Close()
	for _, fam := range nftFamilies {
		if ipv4Only && fam == unix.NFPROTO_IPV6 {
			continue
		}
		if _, err := nl.Execute(batch(snatMessages(fam, dev)...)...); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
				return fmt.Errorf("%w (nf_tables, nft_nat, nft_masq): %v", ErrNoNftables, err)
			}
			return fmt.Errorf("router: adding the nftables masquerade rule: %w", err)
		}
	}
	return nil
}

// delSNAT removes the node's nftables tables, if there are any, and
// reports whether it removed one.
func delSNAT() (bool, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER)
	if err != nil {
		return false, nil // no nf_tables: nothing to remove
	}
	defer nl.Close()
	removed := false
	var errs []error
	for _, fam := range nftFamilies {
		_, err := nl.Execute(batch(delTable(fam))...)
		switch {
		case err == nil:
			removed = true
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EAFNOSUPPORT):
		default:
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}
