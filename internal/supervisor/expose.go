package supervisor

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The Prometheus text exposition format (version 0.0.4), written here
// rather than by client_golang: the supervisor builds its metrics at
// scrape time anyway, and client_golang's package initialisers (its
// default Go collector with its regexps, procfs, protobuf, expvar) ran in
// every process of this binary, each worker included: ≈ 200 KB of heap
// and ≈ 0.5 ms of CPU per worker start (issue 15).

// metricDesc is a metric family: name, help, type and label names.
type metricDesc struct {
	name, help, typ string
	labels          []string
}

func newDesc(name, help, typ string, labels ...string) *metricDesc {
	return &metricDesc{name: name, help: help, typ: typ, labels: labels}
}

// sample is one metric of a family: label values in the order of the
// family's label names, and a value or a histogram.
type sample struct {
	values []string
	v      float64
	hist   *histSample
}

type histSample struct {
	bounds []float64
	counts []uint64 // cumulative, one per bound
	count  uint64
	sum    float64
}

// exposition collects samples by family and writes them sorted (families
// by name, samples by label values), as client_golang's registry did.
type exposition struct {
	fams map[*metricDesc][]sample
}

func (e *exposition) add(d *metricDesc, v float64, values ...string) {
	if e.fams == nil {
		e.fams = map[*metricDesc][]sample{}
	}
	e.fams[d] = append(e.fams[d], sample{values: values, v: v})
}

func (e *exposition) addHistogram(d *metricDesc, h histSample, values ...string) {
	if e.fams == nil {
		e.fams = map[*metricDesc][]sample{}
	}
	e.fams[d] = append(e.fams[d], sample{values: values, hist: &h})
}

func (e *exposition) write(b *bytes.Buffer) {
	descs := make([]*metricDesc, 0, len(e.fams))
	for d := range e.fams {
		descs = append(descs, d)
	}
	slices.SortFunc(descs, func(a, b *metricDesc) int { return strings.Compare(a.name, b.name) })
	for _, d := range descs {
		ss := e.fams[d]
		slices.SortFunc(ss, func(a, b sample) int { return slices.Compare(a.values, b.values) })
		b.WriteString("# HELP " + d.name + " ")
		b.WriteString(helpEscaper.Replace(d.help))
		b.WriteString("\n# TYPE " + d.name + " " + d.typ + "\n")
		for _, s := range ss {
			if s.hist == nil {
				writeSample(b, d.name, d.labels, s.values, s.v)
				continue
			}
			h := s.hist
			labels := append(slices.Clip(d.labels), "le")
			inf := false
			for i, ub := range h.bounds {
				inf = inf || math.IsInf(ub, +1)
				writeSample(b, d.name+"_bucket", labels, append(slices.Clip(s.values), formatFloat(ub)), float64(h.counts[i]))
			}
			if !inf {
				writeSample(b, d.name+"_bucket", labels, append(slices.Clip(s.values), "+Inf"), float64(h.count))
			}
			writeSample(b, d.name+"_sum", d.labels, s.values, h.sum)
			writeSample(b, d.name+"_count", d.labels, s.values, float64(h.count))
		}
	}
}

func writeSample(b *bytes.Buffer, name string, labels, values []string, v float64) {
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l + `="`)
			b.WriteString(labelEscaper.Replace(values[i]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(formatFloat(v))
	b.WriteByte('\n')
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)
