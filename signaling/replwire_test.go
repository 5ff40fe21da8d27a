package signaling

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/chorus-voice/chorus/guild"
)

func replicaMsg(inc, seq uint64, recs ...[]byte) []byte {
	b := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, inc), seq)
	for _, r := range recs {
		b = append(b, r...)
	}
	return b
}

func TestReplicaCodec(t *testing.T) {
	ev := &guild.Event{Name: "MESSAGE_CREATE", Data: []byte(`{"id":"1"}`)}
	msg := replicaMsg(7, 3,
		appendBatchRec(nil, guild.BatchRef{From: "n2", N: 9}),
		appendLocalRec(nil, ev, []string{"a", "b"}),
		appendDescribeRec(nil, "a", []byte(`{"user":"5"}`)),
		appendSnapshotRec(nil, "b", []byte(`{}`), 4, []*guild.Event{ev, ev}),
		appendAckRec(nil, "a", 12),
		appendEndRec(nil, "b"),
		[]byte{recSync})
	inc, seq, err := replicaHeader(msg)
	if err != nil || inc != 7 || seq != 3 {
		t.Fatalf("header %d %d %v", inc, seq, err)
	}
	var kinds []byte
	err = readReplica(msg, func(r *record) error {
		kinds = append(kinds, r.kind)
		switch r.kind {
		case recBatch:
			if r.ref != (guild.BatchRef{From: "n2", N: 9}) {
				t.Errorf("batch ref %+v", r.ref)
			}
		case recLocal:
			if r.ev.Name != ev.Name || !bytes.Equal(r.ev.Data, ev.Data) || len(r.sessions) != 2 || r.sessions[1] != "b" {
				t.Errorf("local %+v", r)
			}
		case recSnapshot:
			if r.session != "b" || r.seq != 4 || len(r.events) != 2 || r.events[1].Name != ev.Name {
				t.Errorf("snapshot %+v", r)
			}
		case recAck:
			if r.session != "a" || r.seq != 12 {
				t.Errorf("ack %+v", r)
			}
		}
		return nil
	})
	if err != nil || string(kinds) != "BLDSAEZ" {
		t.Fatalf("records %q, %v", kinds, err)
	}
	for _, bad := range [][]byte{nil, msg[:10], replicaMsg(1, 1, []byte{'Q'}), msg[:len(msg)-3], replicaMsg(1, 1, []byte{recSnapshot, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})} {
		if err := readReplica(bad, func(*record) error { return nil }); err == nil {
			t.Errorf("malformed %v accepted", bad)
		}
	}
}

func FuzzReadReplica(f *testing.F) {
	ev := &guild.Event{Name: "X", Data: []byte("{}")}
	f.Add(replicaMsg(1, 1, appendLocalRec(nil, ev, []string{"s"}), appendSnapshotRec(nil, "s", nil, 1, []*guild.Event{ev})))
	f.Add(replicaMsg(1, 2, []byte{recSync}, appendBatchRec(nil, guild.BatchRef{From: "n", N: 1})))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		readReplica(b, func(r *record) error {
			n++
			if n > len(b) {
				t.Fatal("more records than bytes")
			}
			return nil
		})
	})
}

func TestBuddyOf(t *testing.T) {
	for _, c := range []struct {
		nodes []string
		node  string
		want  string
	}{
		{[]string{"n1"}, "n1", ""},
		{[]string{"n1", "n2"}, "n1", "n2"},
		{[]string{"n1", "n2"}, "n2", "n1"},
		{[]string{"n1", "n2", "n3"}, "n3", "n1"},
		{[]string{"n1", "n3"}, "n2", "n3"}, // a node that left: its successor
	} {
		if got := buddyOf(c.nodes, c.node); got != c.want {
			t.Errorf("buddyOf(%v, %s) = %q, want %q", c.nodes, c.node, got, c.want)
		}
	}
}
