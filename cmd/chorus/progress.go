package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// progress is a live bar towards a total with a line of counters and
// current rates, on stderr.
type progress struct {
	p     *mpb.Progress
	bar   *mpb.Bar
	mu    sync.Mutex
	line  string
	last  [2]int64
	lastT time.Time
}

func newProgress(name string, total int64) *progress {
	pr := &progress{p: mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(32), mpb.WithRefreshRate(250*time.Millisecond)),
		lastT: time.Now()}
	pr.bar = pr.p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name+" "), decor.Elapsed(decor.ET_STYLE_GO)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			pr.mu.Lock()
			defer pr.mu.Unlock()
			return pr.line
		})))
	return pr
}

// counts sets the bar to current and shows two counters with their rates
// since the previous call, and an error count.
func (pr *progress) counts(current int64, aName string, a int64, bName string, b int64, errName string, errs int64) {
	pr.mu.Lock()
	dt := time.Since(pr.lastT).Seconds()
	ra, rb := float64(a-pr.last[0])/dt, float64(b-pr.last[1])/dt
	pr.last, pr.lastT = [2]int64{a, b}, time.Now()
	pr.line = fmt.Sprintf(" %s %d (%.0f/s)  %s %d (%.0f/s)  %s %d", aName, a, ra, bName, b, rb, errName, errs)
	pr.mu.Unlock()
	pr.bar.SetCurrent(current)
}

// finish completes the bar and waits for the last render.
func (pr *progress) finish() {
	pr.bar.SetTotal(-1, true)
	pr.p.Wait()
}
