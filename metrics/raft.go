package metrics

import "github.com/prometheus/client_golang/prometheus"

// WatchRaft exports the node's Raft log position: the last index written
// to its log and the last index its state machine applied. Operators see
// replication lag in the difference, and how fast the log grows.
func (p *Prom) WatchRaft(last, applied func() uint64) {
	p.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "condamesh_raft_last_index", Help: "Index of the last entry in this node's Raft log."},
			func() float64 { return float64(last()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "condamesh_raft_applied_index", Help: "Index of the last Raft entry this node applied."},
			func() float64 { return float64(applied()) }),
	)
}
