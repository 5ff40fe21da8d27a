package server

import (
	"context"
	"errors"
	"testing"
)

// A node of a cluster shares its store with the others: --nats without
// --postgres is refused with a clear error, before anything is created.
func TestNATSNeedsPostgres(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Config{DataDir: dir, NATS: "nats://127.0.0.1:4222", HTTPAddr: "127.0.0.1:0",
		HTTPSAddr: "off", VoiceAddr: "off"})
	if !errors.Is(err, ErrClusterNeedsPostgres) {
		t.Fatalf("err = %v, want ErrClusterNeedsPostgres", err)
	}
}
