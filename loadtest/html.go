package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// The HTML report is one self-contained file: no script, no CDN; the
// charts are inline SVG drawn here.

const chartW, chartH, padL, padB = 660.0, 260.0, 68.0, 32.0

var palette = []string{"#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"}

// svgLines draws series of (x, y) points on a linear x axis and a log y
// axis (milliseconds), with labelled ticks.
func svgLines(title string, xLabels []string, series []namedSeries, marks ...Mark) template.HTML {
	var b strings.Builder
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s.values {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0.1, 1
	}
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	y := func(v float64) float64 {
		if v <= 0 {
			v = lo
		}
		return (chartH - padB) - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*(chartH-padB-10)
	}
	n := len(xLabels)
	x := func(i int) float64 {
		if n <= 1 {
			return padL
		}
		return padL + float64(i)/float64(n-1)*(chartW-padL-20)
	}
	fmt.Fprintf(&b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="%s">`,
		chartW, chartH+24, chartW, chartH+24, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%g" height="%g" fill="#fff"/>`, chartW, chartH+24)
	for v := lo; v <= hi*1.0001; v *= 10 {
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" font-size="11" text-anchor="end" fill="#444">%g ms</text>`,
			padL, chartW-20, y(v), y(v), padL-4, y(v)+4, v)
	}
	step := max(1, n/10)
	for i := 0; i < n; i += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" font-size="11" text-anchor="middle" fill="#444">%s</text>`, x(i), chartH-padB+16, template.HTMLEscapeString(xLabels[i]))
	}
	for i, m := range marks {
		mx := padL
		if n > 1 {
			mx = padL + m.Second/float64(n-1)*(chartW-padL-20)
		}
		fmt.Fprintf(&b, `<line class="mark" x1="%.1f" x2="%.1f" y1="10" y2="%g" stroke="#b91c1c" stroke-dasharray="4 3"/><text x="%.1f" y="%d" font-size="11" fill="#b91c1c">%s</text>`,
			mx, mx, chartH-padB, mx+3, 20+14*i, template.HTMLEscapeString(m.Label))
	}
	for si, s := range series {
		color := palette[si%len(palette)]
		var pts []string
		for i, v := range s.values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
		}
		fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, strings.Join(pts, " "))
		for i, v := range s.values {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(i), y(v), color)
		}
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="12" height="12" fill="%s"/><text x="%g" y="%g" font-size="12">%s</text>`,
			padL+float64(si)*150, chartH+6, color, padL+float64(si)*150+16, chartH+16, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

type namedSeries struct {
	name   string
	values []float64
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chorus loadtest {{.R.Scenario}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#111;max-width:960px}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.miss{color:#b91c1c;font-weight:bold}.met{color:#15803d}
</style></head><body>
<h1>chorus loadtest: {{.R.Scenario}}</h1>
<p>Started {{.R.Started.Format "2006-01-02 15:04:05 UTC"}}, ran {{printf "%.1f" .R.Seconds}} s.</p>
{{if .R.SLOs}}<h2>SLOs</h2><table><tr><th>bound</th><th>measured</th><th>verdict</th></tr>
{{range .R.SLOs}}<tr><td>{{.Spec}}</td><td>{{.Measured}}</td><td class="{{if .Met}}met{{else}}miss{{end}}">{{if .Met}}met{{else}}MISSED{{end}}</td></tr>{{end}}</table>{{end}}
<h2>Latency percentiles</h2>{{.Percentiles}}
{{if .Timeline}}<h2>{{.R.TimelineOf}} latency over time</h2>{{.Timeline}}{{end}}
<h2>Latency (ms)</h2><table><tr><th>series</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range $k, $s := .R.Latency}}<tr><td>{{$k}}</td><td>{{$s.Count}}</td><td>{{printf "%.2f" $s.Mean}}</td><td>{{printf "%.2f" $s.P50}}</td><td>{{printf "%.2f" $s.P90}}</td><td>{{printf "%.2f" $s.P99}}</td><td>{{printf "%.2f" $s.P999}}</td><td>{{printf "%.2f" $s.Max}}</td></tr>{{end}}</table>
<h2>Counters</h2><table>{{range $k, $v := .R.Counters}}<tr><td>{{$k}}</td><td>{{printf "%.2f" $v}}</td></tr>{{end}}</table>
{{if .R.Failures}}<h2>Failures</h2><table>{{range $k, $v := .R.Failures}}<tr><td>{{$k}}</td><td>{{$v}}</td></tr>{{end}}</table>{{end}}
<h2>Parameters</h2><table>{{range $k, $v := .R.Params}}<tr><td>{{$k}}</td><td>{{$v}}</td></tr>{{end}}</table>
</body></html>
`))

// WriteHTML writes the self-contained HTML report.
func (r *Result) WriteHTML(w io.Writer) error {
	names := make([]string, 0, len(r.Latency))
	for k := range r.Latency {
		if r.Latency[k].Count > 0 {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var ps []namedSeries
	for _, k := range names {
		s := r.Latency[k]
		ps = append(ps, namedSeries{k, []float64{s.P50, s.P90, s.P99, s.P999, s.Max}})
	}
	data := struct {
		R                     *Result
		Percentiles, Timeline template.HTML
	}{R: r, Percentiles: svgLines("latency percentiles", []string{"p50", "p90", "p99", "p99.9", "max"}, ps)}
	if len(r.Timeline) > 0 {
		labels := make([]string, len(r.Timeline))
		p50 := make([]float64, len(r.Timeline))
		p99 := make([]float64, len(r.Timeline))
		mx := make([]float64, len(r.Timeline))
		for i, p := range r.Timeline {
			labels[i] = fmt.Sprintf("%ds", p.Second)
			p50[i], p99[i], mx[i] = p.P50, p.P99, p.Max
		}
		data.Timeline = svgLines("latency over time", labels, []namedSeries{{"p50", p50}, {"p99", p99}, {"max", mx}}, r.Marks...)
	}
	return reportTmpl.Execute(w, data)
}

// WriteHTMLFile writes the report to path.
func (r *Result) WriteHTMLFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
