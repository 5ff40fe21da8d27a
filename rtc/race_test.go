//go:build race

package rtc

// raceEnabled: the race detector allocates on its own, so allocation
// counts are asserted only without it (scripts/test.sh runs the
// allocation tests a second time without -race).
const raceEnabled = true
