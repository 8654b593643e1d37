// Package fleettest runs real NATS servers with JetStream inside a test
// (nats-server as a library): a single server or a cluster of three, on
// loopback, with stores in the test's temporary directory. A node can be
// killed and brought back on the same ports and store.
package fleettest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a set of JetStream servers (one, or a three-node cluster).
type Cluster struct {
	t       testing.TB
	opts    []*server.Options
	servers []*server.Server
}

// freePort finds a loopback port nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts n JetStream servers (1, or 3 for a cluster), each changed by
// edit when it is not nil, and stops them at the end of the test.
func Start(t testing.TB, n int, edit func(i int, o *server.Options)) *Cluster {
	t.Helper()
	c := &Cluster{t: t, servers: make([]*server.Server, n)}
	dir, err := os.MkdirTemp("", "scanpay-nats-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		clusterPorts[i] = freePort(t)
	}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       freePort(t),
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoSigs:     true,
			NoLog:      true,
			// Small limits keep a test's memory modest.
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "scanpay-test", Host: "127.0.0.1", Port: clusterPorts[i]}
			var routes string
			for j, p := range clusterPorts {
				if j != i {
					if routes != "" {
						routes += ","
					}
					routes += fmt.Sprintf("nats://127.0.0.1:%d", p)
				}
			}
			o.Routes = server.RoutesFromStr(routes)
		}
		if edit != nil {
			edit(i, o)
		}
		c.opts = append(c.opts, o)
	}
	for i := range c.opts {
		c.startNode(i)
	}
	t.Cleanup(c.Shutdown)
	for i := range c.servers {
		if !c.servers[i].ReadyForConnections(20 * time.Second) {
			t.Fatalf("nats node %d not ready", i+1)
		}
	}
	return c
}

func (c *Cluster) startNode(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("nats node %d: %v", i+1, err)
	}
	s.Start()
	c.servers[i] = s
}

// URLs are the client URLs of the nodes.
func (c *Cluster) URLs() []string {
	var out []string
	for _, o := range c.opts {
		scheme := "nats"
		if o.TLSConfig != nil {
			scheme = "tls"
		}
		out = append(out, fmt.Sprintf("%s://127.0.0.1:%d", scheme, o.Port))
	}
	return out
}

// Server returns node i while it runs (nil when killed).
func (c *Cluster) Server(i int) *server.Server { return c.servers[i] }

// Kill stops node i at once.
func (c *Cluster) Kill(i int) {
	if s := c.servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.servers[i] = nil
	}
}

// Restart brings node i back on its ports and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	c.startNode(i)
	if !c.servers[i].ReadyForConnections(20 * time.Second) {
		c.t.Fatalf("nats node %d not ready after restart", i+1)
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.servers {
		c.Kill(i)
	}
}
