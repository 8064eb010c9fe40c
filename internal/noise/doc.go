// Package noise implements the Noise IK handshake and record layer used by
// the Tailscale control protocol (ts2021).
//
// The handshake is Noise_IK_25519_ChaChaPoly_BLAKE2s. The client is the
// initiator; its static key is the machine key and it knows the server's
// static key in advance. The 101-byte initiation message is created before
// any connection exists (it travels in an HTTP header during the upgrade to
// the Noise protocol) and the 51-byte response is read from the upgraded
// stream afterwards, so the initiator side is split into [NewInitiator],
// [Initiator.Message] and [Initiator.Finish].
//
// After the handshake, data is carried in records of at most 4096 bytes:
//
//	type (0x04) || length (uint16 BE) || ChaCha20-Poly1305 ciphertext
//
// The AEAD nonce is four zero bytes followed by a big-endian 64-bit counter,
// which differs from the little-endian counter of the Noise specification.
package noise
