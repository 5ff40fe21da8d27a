package rtc

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"sync"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
)

// keyTap learns a peer's DTLS-SRTP keys so the leg can encrypt what it
// sends itself (srtp.go) instead of through pion's track writer, whose
// per-packet path (interceptor chain, SRTP session lookup, ICE conn and
// mux layers) costs several times the encryption. pion exposes no
// keying-material exporter, but it hands out both halves of one: its
// DTLS key log gives the client random and the master secret, and the
// ServerHello hook the server random, the cipher suite (its PRF hash) and
// the SRTP profile chosen. The export itself is RFC 5705 §4 with the
// label of RFC 5764 §4.2, as pion computes it for its own session.
type keyTap struct {
	mu           sync.Mutex
	clientRandom []byte
	masterSecret []byte
	serverRandom [handshake.RandomLength]byte
	suite        uint16
	profile      srtp.ProtectionProfile
	hello        bool
}

var errNoKeys = errors.New("rtc: DTLS keys not seen (yet)")

// Write takes pion's DTLS key log: "CLIENT_RANDOM <hex> <hex>\n" (the NSS
// key log format), one line per handshake.
func (k *keyTap) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) == 3 && string(f[0]) == "CLIENT_RANDOM" {
		cr, err1 := hex.DecodeString(string(f[1]))
		ms, err2 := hex.DecodeString(string(f[2]))
		if err1 == nil && err2 == nil {
			k.mu.Lock()
			k.clientRandom, k.masterSecret = cr, ms
			k.mu.Unlock()
		}
	}
	return len(line), nil
}

// serverHello is the ServerHello hook: it notes and returns the message.
func (k *keyTap) serverHello(m handshake.MessageServerHello) handshake.Message {
	k.mu.Lock()
	k.serverRandom = m.Random.MarshalFixed()
	if m.CipherSuiteID != nil {
		k.suite = *m.CipherSuiteID
	}
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) == 1 {
			k.profile = srtp.ProtectionProfile(u.ProtectionProfiles[0])
		}
	}
	k.hello = true
	k.mu.Unlock()
	return &m
}

// ExportKeyingMaterial is RFC 5705's exporter with no context
// (srtp.KeyingMaterialExporter), from the server's side.
func (k *keyTap) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.hello || k.masterSecret == nil || len(context) != 0 {
		return nil, errNoKeys
	}
	hash := prf.HashFunc(sha256.New)
	if k.suite == uint16(dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) || k.suite == uint16(dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) {
		hash = sha512.New384
	}
	seed := append(append([]byte(label), k.clientRandom...), k.serverRandom[:]...)
	return prf.PHash(k.masterSecret, seed, length, hash)
}

// contexts are the SRTP and SRTCP contexts of what the server sends (the
// DTLS server's write keys) and of what it receives (the client's, with
// replay protection), RFC 5764 §4.2.
func (k *keyTap) contexts() (out, in *srtp.Context, err error) {
	k.mu.Lock()
	profile := k.profile
	k.mu.Unlock()
	if profile == 0 {
		return nil, nil, errNoKeys
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(k, false); err != nil {
		return nil, nil, err
	}
	if out, err = srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile); err != nil {
		return nil, nil, err
	}
	in, err = srtp.CreateContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, profile,
		srtp.SRTPReplayProtection(replayWindow))
	return out, in, err
}

// replayWindow is how many packets back a received SRTP packet may be
// and still be accepted once (RFC 3711 §3.3.2); pion's default.
const replayWindow = 64
