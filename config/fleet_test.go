package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFleetSection(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil || cfg.Fleet != nil {
		t.Fatalf("fleet must be off without [fleet]: %+v, %v", cfg.Fleet, err)
	}
	cfg, err = Parse([]byte(minimal + "[fleet]\nservers = [\"tls://hq.example.com:4222\"]\ncredentials = \"/etc/scanpay/fleet.creds\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Fleet
	if f.Stream != "SCANPAY" || f.SubjectPrefix != "scanpay" || f.MaxBacklog != 100000 || f.Heartbeat.Duration != time.Minute {
		t.Fatalf("defaults %+v", f)
	}
	for _, c := range []struct{ body, key, msg string }{
		{"[fleet]\n", "fleet.servers", "missing"},
		{"[fleet]\nservers = [\"nats://hq.example.com:4222\"]\ncredentials = \"x\"\n", "fleet.servers", "tls://"},
		{"[fleet]\nservers = [\"http://hq:4222\"]\n", "fleet.servers", "not a URL"},
		{"[fleet]\nservers = [\"tls://hq\"]\ncredentials = \"x\"\n", "fleet.servers", "port"},
		{"[fleet]\nservers = [\"tls://hq:4222\"]\n", "fleet.credentials", "missing"},
		{"[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nmax_backlog = 10\n", "fleet.max_backlog", "1000"},
		{"[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nheartbeat = \"1h\"\n", "fleet.heartbeat", "between"},
		{"[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"a.b\"\n", "fleet.stream", "stream name"},
		{"[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nsubject_prefix = \"a.>\"\n", "fleet.subject_prefix", "subject"},
		{"[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\ncert_file = \"c.pem\"\n", "fleet.servers", "together"},
		{"[fleet]\nserver = [\"nats://127.0.0.1:4222\"]\n", "fleet.server", "unknown key"},
	} {
		_, err := Parse([]byte(minimal + c.body))
		var es Errors
		if !errors.As(err, &es) || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v", c.body, err)
		}
	}
	// Plain nats:// to this machine needs no credentials.
	if _, err := Parse([]byte(minimal + "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\n")); err != nil {
		t.Fatal(err)
	}
}

func TestHQExampleParses(t *testing.T) {
	cfg, err := LoadHQ("../deploy/hq.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Embedded == nil || cfg.Metrics == nil || cfg.NATS.Replicas != 1 || cfg.NATS.AckWait.Duration != 30*time.Second {
		t.Fatalf("%+v", cfg)
	}
	def := DefaultHQ()
	if cfg.NATS.MaxAge != def.NATS.MaxAge || cfg.Postgres != def.Postgres || cfg.Lanes != def.Lanes {
		t.Fatal("the example must show the defaults")
	}
	data, _ := os.ReadFile("../deploy/hq.toml")
	for _, key := range []string{"servers", "credentials", "ca_file", "cert_file", "key_file", "stream", "manage_stream", "replicas",
		"max_age", "durable", "batch", "ack_wait", "subject_prefix", "listen", "store_dir", "config_file", "url", "silent_after",
		"timezone", "level", "format"} {
		if !strings.Contains(string(data), key+" =") {
			t.Errorf("example lacks %s", key)
		}
	}
}

func TestHQValidation(t *testing.T) {
	for _, c := range []struct{ body, key string }{
		{"", "nats.servers"},
		{"[nats]\nservers = [\"nats://10.0.0.1:4222\"]\n", "nats.servers"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nreplicas = 2\n", "nats.replicas"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nmax_age = \"1m\"\n", "nats.max_age"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nbatch = 0\n", "nats.batch"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nack_wait = \"1ms\"\n", "nats.ack_wait"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\ndurable = \"a b\"\n", "nats.durable"},
		{"[embedded]\nlisten = \"4222\"\n", "embedded.listen"},
		{"[embedded]\nlisten = \"127.0.0.1:4222\"\n", "embedded.store_dir"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[postgres]\nurl = \"\"\n", "postgres.url"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[report]\ntimezone = \"Mars/Base\"\n", "report.timezone"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[lanes]\nsilent_after = \"1s\"\n", "lanes.silent_after"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[log]\nlevel = \"loud\"\n", "log.level"},
		{"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nreplica = 3\n", "nats.replica"},
		{"[nats\n", "line 2"},
	} {
		if _, err := ParseHQ([]byte(c.body)); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%q: %v", c.body, err)
		}
	}
}

func FuzzParseHQ(f *testing.F) {
	data, _ := os.ReadFile("../deploy/hq.toml")
	f.Add(data)
	f.Add([]byte("[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n"))
	f.Add([]byte("[embedded]\nstore_dir = \"/x\"\n[nats]\nreplicas = 3\nbatch = -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseHQ(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if cfg.NATS.Batch < 1 || cfg.Lanes.SilentAfter.Duration < 10*time.Second || (len(cfg.NATS.Servers) == 0 && cfg.Embedded == nil) {
			t.Fatalf("accepted invalid config %+v", cfg)
		}
	})
}
