package rtc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"time"

	"github.com/pion/webrtc/v4"
)

// newCertificate makes the leg's DTLS certificate: one for every peer, so
// a connect costs no key generation.
func newCertificate() (webrtc.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return webrtc.Certificate{}, err
	}
	c, err := webrtc.GenerateCertificate(key)
	if err != nil {
		return webrtc.Certificate{}, err
	}
	return *c, nil
}

// certificate returns the leg's certificate, renewed a day before it
// expires (pion's are valid for a month, and a node runs longer).
func (l *Leg) certificate() (webrtc.Certificate, error) {
	l.certMu.Lock()
	defer l.certMu.Unlock()
	if time.Until(l.cert.Expires()) < 24*time.Hour {
		c, err := newCertificate()
		if err != nil {
			return webrtc.Certificate{}, err
		}
		l.cert = c
	}
	return l.cert, nil
}
