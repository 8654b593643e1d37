package config

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Fleet is a lane's link to head office ([fleet]; absent = off).
type Fleet struct {
	Servers       []string `toml:"servers"`     // tls://host:4222 (nats:// only to this machine)
	Credentials   string   `toml:"credentials"` // the lane's .creds file (or nkey seed), mode 0600
	CAFile        string   `toml:"ca_file"`
	CertFile      string   `toml:"cert_file"`
	KeyFile       string   `toml:"key_file"`
	Stream        string   `toml:"stream"`
	SubjectPrefix string   `toml:"subject_prefix"`
	MaxBacklog    int      `toml:"max_backlog"`
	Heartbeat     Duration `toml:"heartbeat"`
}

func (f *Fleet) fillDefaults() {
	if f.Stream == "" {
		f.Stream = "SCANPAY"
	}
	if f.SubjectPrefix == "" {
		f.SubjectPrefix = "scanpay"
	}
	if f.MaxBacklog == 0 {
		f.MaxBacklog = 100000
	}
	if f.Heartbeat.Duration == 0 {
		f.Heartbeat.Duration = time.Minute
	}
}

var subjectToken = func(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n*>") && !strings.HasPrefix(s, ".") && !strings.HasSuffix(s, ".")
}

// checkNATS validates a server list: tls:// anywhere, nats:// only to this
// machine, so payment records never cross a network in clear.
func checkNATS(bad func(string, string, ...any), key string, servers []string, ca, cert, keyFile string) {
	// Messages name the entry, never quote it (see Error).
	for i, s := range servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "tls" && u.Scheme != "nats") {
			bad(key, "entry %d is not a URL like tls://hq.example.com:4222", i+1)
			continue
		}
		if u.Scheme == "nats" && !isLoopback(u.Hostname()) && ca == "" && cert == "" {
			bad(key, "entry %d must use tls:// (plain nats:// only to this machine)", i+1)
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			bad(key, "entry %d needs a port, like :4222", i+1)
		}
	}
	if (cert == "") != (keyFile == "") {
		bad(key, "cert_file and key_file go together")
	}
}

func (f *Fleet) validate(bad func(string, string, ...any)) {
	if len(f.Servers) == 0 {
		bad("fleet.servers", "missing: head office's NATS servers, e.g. [\"tls://hq.example.com:4222\"] (or remove [fleet])")
	}
	checkNATS(bad, "fleet.servers", f.Servers, f.CAFile, f.CertFile, f.KeyFile)
	remote := false
	for _, s := range f.Servers {
		if u, err := url.Parse(s); err == nil && !isLoopback(u.Hostname()) {
			remote = true
		}
	}
	if remote && f.Credentials == "" {
		bad("fleet.credentials", "missing: the lane's NATS credentials file (a .creds file from head office)")
	}
	if !subjectToken(f.Stream) || strings.Contains(f.Stream, ".") {
		bad("fleet.stream", "must be a stream name without spaces, dots or wildcards")
	}
	if !subjectToken(f.SubjectPrefix) {
		bad("fleet.subject_prefix", "must be a subject without spaces or wildcards")
	}
	if f.MaxBacklog < 1000 || f.MaxBacklog > 10000000 {
		bad("fleet.max_backlog", "must be 1000–10000000 events")
	}
	if f.Heartbeat.Duration < time.Second || f.Heartbeat.Duration > 10*time.Minute {
		bad("fleet.heartbeat", "must be between 1s and 10m")
	}
}

// HQ is head office's configuration file (hq.toml), read by scanpay hq.
type HQ struct {
	NATS     HQNATS    `toml:"nats"`
	Embedded *Embedded `toml:"embedded"`
	Postgres Postgres  `toml:"postgres"`
	Lanes    HQLanes   `toml:"lanes"`
	Report   HQReport  `toml:"report"`
	Metrics  *Metrics  `toml:"metrics"`
	Log      Log       `toml:"log"`
}

// HQNATS is how head office reaches NATS and what it consumes.
type HQNATS struct {
	Servers       []string `toml:"servers"` // empty with [embedded]: in-process
	Credentials   string   `toml:"credentials"`
	CAFile        string   `toml:"ca_file"`
	CertFile      string   `toml:"cert_file"`
	KeyFile       string   `toml:"key_file"`
	Stream        string   `toml:"stream"`
	ManageStream  bool     `toml:"manage_stream"`
	Replicas      int      `toml:"replicas"`
	MaxAge        Duration `toml:"max_age"`
	Durable       string   `toml:"durable"`
	SubjectPrefix string   `toml:"subject_prefix"`
	Batch         int      `toml:"batch"`
	AckWait       Duration `toml:"ack_wait"`
}

// Embedded is the NATS server head office can run itself.
type Embedded struct {
	Listen     string `toml:"listen"`
	StoreDir   string `toml:"store_dir"`
	ConfigFile string `toml:"config_file"`
}

// Postgres is head office's database.
type Postgres struct {
	URL string `toml:"url"` // libpq URL or key=value string; passwords via ~/.pgpass or PGPASSFILE
}

// HQLanes is lane supervision.
type HQLanes struct {
	SilentAfter Duration `toml:"silent_after"`
}

// HQReport is reporting.
type HQReport struct {
	TimeZone string `toml:"timezone"` // IANA name; "" = this machine's
}

// DefaultHQ returns head office's defaults.
func DefaultHQ() HQ {
	return HQ{
		NATS: HQNATS{Stream: "SCANPAY", ManageStream: true, Replicas: 1, MaxAge: Duration{30 * 24 * time.Hour},
			Durable: "hq", SubjectPrefix: "scanpay", Batch: 256, AckWait: Duration{30 * time.Second}},
		Postgres: Postgres{URL: "postgres:///scanpay?host=/var/run/postgresql"},
		Lanes:    HQLanes{SilentAfter: Duration{3 * time.Minute}},
		Log:      Log{Level: "info", Format: "json"},
	}
}

// DefaultHQPath is where scanpay hq looks without --config.
const DefaultHQPath = "/etc/scanpay/hq.toml"

// ParseHQ decodes hq.toml over the defaults, strictly, and validates it.
func ParseHQ(data []byte) (HQ, error) {
	cfg := DefaultHQ()
	if len(data) > MaxSize {
		return cfg, Errors{{Msg: tooLarge(int64(len(data)))}}
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		return cfg, Errors{decodeProblem(err)}
	}
	errs, err := unknownKeys(context.Background(), md, data, "a scanpay hq setting")
	if err != nil {
		return cfg, err
	}
	if len(errs) > 0 {
		return cfg, errs
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// LoadHQ reads and parses hq.toml, with the limits of Load.
func LoadHQ(path string) (HQ, error) {
	data, err := readConfig(path)
	if err != nil {
		return HQ{}, err
	}
	cfg, err := ParseHQ(data)
	if err != nil {
		return cfg, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

// Validate checks every value of hq.toml.
func (c *HQ) Validate() error {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	n := c.NATS
	if len(n.Servers) == 0 && c.Embedded == nil {
		bad("nats.servers", "missing: the NATS servers, or an [embedded] section to run one here")
	}
	checkNATS(bad, "nats.servers", n.Servers, n.CAFile, n.CertFile, n.KeyFile)
	if !subjectToken(n.Stream) || strings.Contains(n.Stream, ".") {
		bad("nats.stream", "must be a stream name without spaces, dots or wildcards")
	}
	if !subjectToken(n.Durable) || strings.Contains(n.Durable, ".") {
		bad("nats.durable", "must be a consumer name without spaces, dots or wildcards")
	}
	if !subjectToken(n.SubjectPrefix) {
		bad("nats.subject_prefix", "must be a subject without spaces or wildcards")
	}
	if n.Replicas != 1 && n.Replicas != 3 && n.Replicas != 5 {
		bad("nats.replicas", "must be 1, 3 or 5")
	}
	if n.MaxAge.Duration < time.Hour {
		bad("nats.max_age", "must be at least 1h (how long the stream keeps events for a head office that is down)")
	}
	if n.AckWait.Duration < time.Second || n.AckWait.Duration > 10*time.Minute {
		bad("nats.ack_wait", "must be between 1s and 10m")
	}
	if n.Batch < 1 || n.Batch > 4096 {
		bad("nats.batch", "must be 1–4096")
	}
	if e := c.Embedded; e != nil {
		if e.Listen != "" {
			if _, _, err := net.SplitHostPort(e.Listen); err != nil {
				bad("embedded.listen", "not host:port like 0.0.0.0:4222")
			}
		}
		if e.StoreDir == "" {
			bad("embedded.store_dir", "missing: where JetStream keeps its files (/var/lib/scanpay-hq/jetstream)")
		}
	}
	if c.Postgres.URL == "" {
		bad("postgres.url", "missing: the database, e.g. postgres:///scanpay?host=/var/run/postgresql")
	}
	if c.Lanes.SilentAfter.Duration < 10*time.Second {
		bad("lanes.silent_after", "must be at least 10s (lanes report every minute)")
	}
	if tz := c.Report.TimeZone; tz != "" {
		if _, err := time.LoadLocation(tz); err != nil {
			bad("report.timezone", "not a time zone like America/Toronto")
		}
	}
	if m := c.Metrics; m != nil && m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			bad("metrics.listen", "not host:port like 127.0.0.1:9465")
		}
	}
	c.Log.validate(bad)
	if len(errs) > 0 {
		return errs
	}
	return nil
}
