package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
)

// clock is scenario 5. The lane booted with its RTC a day behind and no
// network, so nothing has set the clock: the lane must not sell and must
// say why (issue 11's contract). Then the cable
// goes in, timesyncd sets the clock from the host's SNTP responder, and a
// sale is approved, dated today and reported today.
func (l *lane) clock(t *testing.T) {
	m := l.m
	out := strings.Fields(m.sh(t, `timedatectl show -p NTPSynchronized --value; date +%s`))
	guest, _ := strconv.ParseInt(out[1], 10, 64)
	behind := time.Since(time.Unix(guest, 0))
	t.Logf("before time sync: NTPSynchronized=%s, the guest's clock %v behind", out[0], behind.Round(time.Minute))
	if out[0] != "no" || behind < 23*time.Hour {
		m.fatal(t, "the lane should start a day behind and unsynchronised")
	}

	// require_clock_sync is on by default: the lane waits and says why.
	m.waitFor(t, 60*time.Second, "/healthz answering 503 and naming the clock", func() (bool, string) {
		out, _, _ := m.exec(time.Minute, `http_get 9464 /healthz`)
		return strings.Contains(out, " 503 ") && strings.Contains(strings.ToLower(out), "clock"), out
	})
	waiting := m.registerLine(t)
	reg := &ecrtest.Register{Conn: waiting, Timeout: 5 * time.Second}
	if err := reg.Send(saleRequest(1000, "CLOCK0")); !errors.Is(err, ecrtest.ErrRefused) {
		t.Errorf("a register sale while the clock is not set: %v, want NAK at ENQ", err)
	}
	waiting.Close()
	if !bytes.Contains(bytes.ToLower(m.displayBytes(t)), []byte("clock")) {
		t.Errorf("the display does not say the lane waits for the clock:\n%q", m.displayBytes(t))
	}
	// The lane says it once, however long it waits (it checks every
	// second); the register's refused request is a line of its own.
	lines := m.sh(t, `journalctl -u scanpay -b -o cat | grep -i clock || true`)
	if n := strings.Count(lines, `"logger":"lane"`); n != 1 {
		t.Errorf("%d lane log lines name the clock, want one:\n%s", n, lines)
	}
	t.Logf("the log while waiting:\n%s", lines)

	// The cable goes in.
	m.monitor(t, "set_link nic0 on")
	start := time.Now()
	m.waitFor(t, 2*time.Minute, "timesyncd synchronising the clock", func() (bool, string) {
		out, _, _ := m.exec(time.Minute, `timedatectl show -p NTPSynchronized --value`)
		return strings.TrimSpace(out) == "yes", out
	})
	guest, _ = strconv.ParseInt(strings.TrimSpace(m.sh(t, `date +%s`)), 10, 64)
	t.Logf("clock synchronised %.0f s after the link came up; now %v off the host", time.Since(start).Seconds(), time.Since(time.Unix(guest, 0)).Round(time.Second))
	if d := time.Since(time.Unix(guest, 0)); d > 10*time.Second || d < -10*time.Second {
		t.Fatalf("the guest's clock is %v off after sync", d)
	}
	m.waitFor(t, 60*time.Second, "/healthz answering 200 once the clock is set", func() (bool, string) {
		out, _, _ := m.exec(time.Minute, `http_get 9464 /healthz`)
		return strings.Contains(out, " 200 "), out
	})
	l.clockWithoutTimesyncd(t)

	line, reg := l.registerSale(t, 1000, "CLOCK1")
	m.sh(t, "scan "+l.code())
	res, err := reg.Receive(90*time.Second, true)
	if err != nil || res.Status != ecr.StatusApproved || res.Amount != 1000 {
		m.fatal(t, "the first sale after time sync: %+v %v", res, err)
	}
	l.checkRegisterBytes(t, line)
	o := l.waitOrder(t, 30*time.Second, 1000, "PAID")
	created, err := time.Parse(time.RFC3339, o.CreatedAt)
	if err != nil || time.Since(created) > 10*time.Minute || time.Since(created) < -time.Minute {
		t.Errorf("order %s created at %s, host time %s", o.MchOrderNo, o.CreatedAt, time.Now().UTC().Format(time.RFC3339))
	}
	if !regexp.MustCompile(`^LANE1-\d+-[0-9A-Z]+$`).MatchString(o.MchOrderNo) || len(o.MchOrderNo) > 30 {
		t.Errorf("order number %q", o.MchOrderNo)
	}
	today, yesterday := time.Now().UTC().Format("2006-01-02"), time.Now().UTC().Add(-24*time.Hour).Format("2006-01-02")
	type report struct {
		From, To   string
		PaidCount  int   `json:"paidCount"`
		PaidAmount int64 `json:"paidAmount"`
	}
	var rt, ry report
	json.Unmarshal([]byte(m.sh(t, `scanpay report --format json`)), &rt)
	json.Unmarshal([]byte(m.sh(t, `scanpay report --from `+yesterday+` --to `+yesterday+` --format json`)), &ry)
	if rt.From != today || rt.PaidCount != 1 || rt.PaidAmount != 1000 || ry.PaidCount != 0 {
		t.Errorf("reports: today %+v, yesterday %+v; want the sale today only", rt, ry)
	}
}

// clockWithoutTimesyncd: where chrony or ntpd keeps the clock there is no
// timesyncd flag file, and scanpay reads the kernel's status (adjtimex),
// which the unit's sandbox forbids twice: ProtectClock=yes and the
// @system-service allow-list (adjtimex is in @clock). The README's
// override must make such a lane sell; ProtectClock=no alone does not.
func (l *lane) clockWithoutTimesyncd(t *testing.T) {
	m := l.m
	health := func() string {
		out, _, _ := m.exec(time.Minute, `http_get 9464 /healthz | head -n 1`)
		return strings.TrimSpace(out)
	}
	// systemctl restart returns at READY, once the lane is IDLE or
	// WAITING_CLOCK: /healthz then says which.
	m.sh(t, `systemctl stop systemd-timesyncd
rm -f /run/systemd/timesync/synchronized
test "$(timedatectl show -p NTPSynchronized --value)" = yes
systemctl restart scanpay`)
	without := health()
	m.sh(t, `mkdir -p /etc/systemd/system/scanpay.service.d
printf '[Service]\nProtectClock=no\n' > /etc/systemd/system/scanpay.service.d/clock.conf
systemctl daemon-reload
systemctl restart scanpay`)
	protectClockNo := health()
	m.sh(t, `printf '[Service]\nProtectClock=no\nSystemCallFilter=adjtimex\n' > /etc/systemd/system/scanpay.service.d/clock.conf
systemctl daemon-reload
systemctl restart scanpay`)
	readme := health()
	t.Logf("kernel synchronised, no timesyncd flag: /healthz %q as shipped, %q with ProtectClock=no, %q with ProtectClock=no and SystemCallFilter=adjtimex (README)",
		without, protectClockNo, readme)
	if !strings.Contains(without, " 503 ") || !strings.Contains(readme, " 200 ") {
		t.Errorf("want 503 as shipped and 200 with the README's override")
	}
	m.sh(t, `rm -r /etc/systemd/system/scanpay.service.d
systemctl daemon-reload
systemctl start systemd-timesyncd
wait_until 60 test -e /run/systemd/timesync/synchronized
systemctl restart scanpay`)
	if h := health(); !strings.Contains(h, " 200 ") {
		t.Errorf("back on timesyncd: /healthz %q", h)
	}
}

// sales is scenario 2: a sale with the amount from the USB keypad, one
// from the register at 7E1, the code each time from the USB scanner, under
// the unit's sandbox; display and register bytes checked.
func (l *lane) sales(t *testing.T) {
	m := l.m
	tty := m.sh(t, `stty -F `+l.rig.tty.ecr+` -a`)
	flags := " " + strings.Join(strings.Fields(strings.ReplaceAll(tty, ";", " ")), " ") + " "
	for _, want := range []string{"speed 9600 baud", " cs7 ", " parenb ", " -parodd "} {
		if !strings.Contains(flags, want) {
			t.Errorf("the register's UART as scanpay set it: want %q in\n%s", want, tty)
		}
	}

	// The keypad and the scanner, plugged in after scanpay started.
	code := l.code()
	m.sh(t, "keypad 2865 9s; scan "+code+" 13s")
	o := l.waitOrder(t, 2*time.Minute, 2865, "PAID")
	if o.Source != "keypad" || o.Code == code || !strings.HasSuffix(o.Code, code[len(code)-4:]) {
		t.Errorf("keypad sale %+v", o)
	}
	disp := m.displayBytes(t)
	for _, want := range []string{"\x1b\x40", "\x1f\x24\x01\x01Amount        $28.65", "\x1f\x24\x01\x01Approved      $28.65",
		"\x1f\x24\x01\x02WeChat Pay Thank you", "\x07"} {
		if !bytes.Contains(disp, []byte(want)) {
			t.Errorf("the display never got %q", want)
		}
	}

	// The register.
	line, reg := l.registerSale(t, 1205, "REG1")
	m.sh(t, "scan "+l.code())
	res, err := reg.Receive(2*time.Minute, true)
	if err != nil || res.Status != ecr.StatusApproved || res.Amount != 1205 || res.Private != "REG1      " || !strings.HasPrefix(strings.TrimSpace(res.Report), "WX AM") {
		m.fatal(t, "the register's result: %+v %v", res, err)
	}
	l.checkRegisterBytes(t, line)
	got, put := line.bytes()
	t.Logf("register line: sent %q, received %q", put, got)
	o = l.waitOrder(t, 30*time.Second, 1205, "PAID")
	if o.Source != "ecr" || o.ECRRef != "REG1" {
		t.Errorf("register sale %+v", o)
	}
	disp = m.displayBytes(t)
	if !bytes.Contains(disp, []byte("\x1f\x24\x01\x01Approved      $12.05")) {
		t.Errorf("the display never showed the register's sale approved")
	}
	for _, c := range l.codes {
		if bytes.Contains(disp, []byte(c)) {
			t.Errorf("the payment code %s reached the display", c)
		}
	}
}

// midPoll starts a register sale whose order the gateway pays on its third
// query (amount ending in 52), and returns once scanpay polls it and the
// gateway has not paid it yet. The register then gives up waiting.
func (l *lane) midPoll(t *testing.T, amount int64, ref string) {
	t.Helper()
	line, _ := l.registerSale(t, amount, ref)
	l.m.sh(t, "scan "+l.code())
	// Polling: the gateway has the order, unpaid, and has been asked about
	// it; the journal has it open (SUBMITTING and POLLING are one to
	// recovery, and scanpay writes no commit between them).
	l.m.waitFor(t, time.Minute, fmt.Sprintf("scanpay polling the order of %d", amount), func() (bool, string) {
		for _, g := range l.ledger(t) {
			if g.Amount != amount {
				continue
			}
			if g.Status != 1 {
				l.m.fatal(t, "the gateway settled the order (status %d after %d queries) before the test saw it polled: too late to act mid-poll", g.Status, g.Queries)
			}
			if g.Queries == 0 {
				return false, "created, not queried yet"
			}
			os := ordersFor(l.orders(t), amount)
			return len(os) == 1 && (os[0].State == "SUBMITTING" || os[0].State == "POLLING"), fmt.Sprintf("journal %+v", os)
		}
		return false, "not at the gateway yet"
	})
	line.Close()
}

// settledOnce checks that the sale of amount ended PAID, once, as the
// gateway has it, and that the register asking again is answered.
func (l *lane) settledOnce(t *testing.T, amount int64, ref string) {
	t.Helper()
	o := l.waitOrder(t, 3*time.Minute, amount, "PAID")
	n := 0
	for _, g := range l.ledger(t) {
		if g.Amount == amount {
			n++
			if g.MchOrderNo != o.MchOrderNo || g.Status != 2 {
				t.Errorf("gateway %+v, journal %+v", g, o)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d orders at the gateway for one sale", n)
	}
	res := l.askAgain(t, amount, ref)
	if res.Status != ecr.StatusApproved || res.Amount != amount || strings.TrimSpace(res.Private) != ref {
		t.Errorf("the register asking again got %+v", res)
	}
	if after := ordersFor(l.orders(t), amount); len(after) != 1 {
		t.Errorf("asking again made another order: %+v", after)
	}
}

// watchdog is scenario 3: the daemon stopped (SIGSTOP) while it polls;
// systemd's watchdog kills and restarts it, and the order settles once.
func (l *lane) watchdog(t *testing.T) {
	m := l.m
	const amount, ref = 1152, "WDOG1"
	l.midPoll(t, amount, ref)
	pid := strings.TrimSpace(m.sh(t, `main_pid`))
	m.sh(t, `kill -STOP `+pid)
	stopped := time.Now()
	m.waitFor(t, watchdogSec+2*time.Minute, "systemd restarting the stopped daemon", func() (bool, string) {
		out, _, _ := m.exec(time.Minute, `echo "$(main_pid) $(systemctl is-active scanpay)"`)
		f := strings.Fields(out)
		return len(f) == 2 && f[0] != "0" && f[0] != pid && f[1] == "active", out
	})
	t.Logf("watchdog: SIGSTOP to a running (READY) daemon again %.0f s later (WatchdogSec=%v, pings every 10 s, RestartSec=2s)",
		time.Since(stopped).Seconds(), watchdogSec)
	why := m.sh(t, `journalctl -u scanpay -b -o cat | grep -E 'Watchdog timeout|Killing process|code=(killed|dumped)|Failed with result' || true`)
	t.Logf("systemd:\n%s", why)
	if !strings.Contains(why, "Watchdog timeout") {
		t.Errorf("systemd did not restart scanpay for its watchdog")
	}
	l.settledOnce(t, amount, ref)
}

// restart is scenario 4a: systemctl restart while the order is polled.
func (l *lane) restart(t *testing.T) {
	const amount, ref = 1252, "RST1"
	l.midPoll(t, amount, ref)
	start := time.Now()
	l.m.sh(t, `systemctl restart scanpay`)
	t.Logf("systemctl restart took %.1f s", time.Since(start).Seconds())
	l.settledOnce(t, amount, ref)
}

// powercut is scenario 4b: QEMU killed while the order is polled, then a
// second boot on the same disk, with the clock and the network as usual.
func (l *lane) powercut(t *testing.T) {
	const amount, ref = 1352, "CUT1"
	l.midPoll(t, amount, ref)
	l.m.kill()
	t.Log("power cut while polling")
	l.m = l.rig.boot(t, bootOpts{name: "boot2", disk: l.disk})
	l.m.sh(t, `systemctl is-active scanpay; ! journalctl -u scanpay -b -o cat | grep -i 'damaged'`)
	l.settledOnce(t, amount, ref)
	l.settledAsTheGateway(t)
}

// console is scenario 8 (a PC's tty1 stands in for the Pi's HDMI console):
// scanner keystrokes while scanpay is not running (before it starts, or
// while systemd restarts it) reach the login prompt on tty1. The README's
// mitigation, no getty on tty1, must leave them nowhere.
func (l *lane) console(t *testing.T) {
	m := l.m
	// While scanpay runs, it holds the scanner (EVIOCGRAB): the sales
	// scanned so far never reached tty1.
	screen := m.sh(t, `cat /dev/vcs1`)
	for _, c := range l.codes {
		if strings.Contains(screen, c) {
			t.Errorf("a code scanned while scanpay ran reached tty1")
		}
	}
	out := m.sh(t, `cat /sys/class/tty/tty0/active; systemctl is-active getty@tty1; systemctl stop scanpay`)
	if !strings.HasPrefix(out, "tty1\nactive\n") {
		m.fatal(t, "tty1 with its login prompt should be the active console: %s", out)
	}
	since := strings.TrimSpace(m.sh(t, `date '+%F %T'`))
	c1, c2 := l.code(), l.code()
	m.sh(t, fmt.Sprintf(`"$fakescanner" --uinput --id 1eab:8203 --name "Newland NLS-FR40" --settle 2s --gap 1s %s %s > /dev/null
sleep 5`, c1, c2))
	screen = m.sh(t, `fold -w 80 /dev/vcs1 | { grep -v '^ *$' || true; } | tail -n 6`)
	logins := m.sh(t, `journalctl -b --since "`+since+`" -o short | grep -iE 'login|pam_|agetty' || true`)
	t.Logf("with scanpay stopped, a scanner typed two codes; tty1 shows:\n%s\njournal since:\n%s", screen, logins)
	if !strings.Contains(screen, c1) {
		t.Errorf("expected the shipped setup's known limit, the first code typed at tty1's login prompt; tty1 shows:\n%s", screen)
	}

	// The mitigation from the README.
	m.sh(t, `systemctl mask --now getty@tty1.service >/dev/null 2>&1; printf '\033c' > /dev/tty1`)
	since = strings.TrimSpace(m.sh(t, `date '+%F %T'`))
	c3 := l.code()
	m.sh(t, fmt.Sprintf(`"$fakescanner" --uinput --id 1eab:8203 --name "Newland NLS-FR40" --settle 2s %s > /dev/null
sleep 3`, c3))
	screen = m.sh(t, `fold -w 80 /dev/vcs1 | { grep -v '^ *$' || true; } | tail -n 6`)
	logins = m.sh(t, `journalctl -b --since "`+since+`" -o short | grep -iE 'login|pam_|agetty' || true`)
	t.Logf("getty@tty1 masked: tty1 shows:\n%s\njournal since:\n%s", screen, logins)
	if strings.Contains(screen, c3) || strings.TrimSpace(logins) != "" {
		t.Errorf("with getty@tty1 masked, the scanner still reached a login")
	}
	m.sh(t, `systemctl start scanpay`)
}

// upgrade is scenario 7a: a newer build installed over the running lane
// keeps the edited config and the journal, and the service comes back.
func (l *lane) upgrade(t *testing.T) {
	m := l.m
	before := m.sh(t, `dpkg-query -W -f '${Version}\n' scanpay; sha256sum /etc/scanpay/scanpay.toml; main_pid`)
	n := len(l.orders(t))
	out := m.sh(t, `apt install -y ./next/scanpay_*_`+l.rig.arch+`.deb 2>&1`)
	after := m.sh(t, `dpkg-query -W -f '${Version}\n' scanpay; sha256sum /etc/scanpay/scanpay.toml; main_pid; systemctl is-active scanpay`)
	b, a := strings.Fields(before), strings.Fields(after)
	t.Logf("upgrade %s → %s", b[0], a[0])
	switch {
	case a[0] == b[0] || !strings.HasPrefix(a[0], b[0]):
		t.Errorf("not upgraded: %s → %s\n%s", b[0], a[0], out)
	case a[1] != b[1]:
		t.Errorf("the edited config changed on upgrade")
	case a[3] == b[3] || a[4] != "active":
		t.Errorf("the service did not come back on the new build (pid %s → %s, %s)", b[3], a[3], a[4])
	}
	if got := len(l.orders(t)); got != n {
		t.Errorf("%d orders before the upgrade, %d after", n, got)
	}
	if !strings.Contains(m.sh(t, `journalctl -u scanpay -b -o cat | grep '"scanpay starting"' | tail -n 1`), `"version":"`+a[0]+`"`) {
		t.Errorf("the running daemon is not version %s", a[0])
	}
	// A sale on the new build.
	line, reg := l.registerSale(t, 1410, "UPG1")
	m.sh(t, "scan "+l.code())
	if res, err := reg.Receive(2*time.Minute, true); err != nil || res.Status != ecr.StatusApproved {
		t.Errorf("a sale after the upgrade: %+v %v", res, err)
	}
	l.checkRegisterBytes(t, line)
}

// journald is scenario 6: after everything, no log holds the merchant key
// or a full payment code.
func (l *lane) journald(t *testing.T) {
	m := l.m
	unit := m.sh(t, `journalctl -u scanpay --no-pager -o cat`)
	all := m.sh(t, `journalctl --no-pager -o cat`)
	t.Logf("journal: %d lines from scanpay (every boot), %d in all; %d codes scanned", strings.Count(unit, "\n"), strings.Count(all, "\n"), len(l.codes))
	for _, secret := range append([]string{merchantKey}, l.codes...) {
		if strings.Contains(unit, secret) {
			t.Errorf("journalctl -u scanpay holds %s", secret)
		} else if strings.Contains(all, secret) {
			t.Errorf("the journal (not scanpay's unit) holds %s: %s", secret, grepLines(all, secret))
		}
	}
}

func grepLines(text, s string) string {
	var r []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, s) {
			r = append(r, line)
		}
	}
	return strings.Join(r, "\n")
}

// removeAndPurge is scenario 7b: apt remove keeps the journal and the
// config; apt purge does what the README says.
func (l *lane) removeAndPurge(t *testing.T) {
	m := l.m
	out := m.sh(t, `apt remove -y scanpay >/dev/null 2>&1
systemctl is-active scanpay || true
test -e /usr/bin/scanpay && echo binary || echo no-binary
test -s /var/lib/scanpay/journal.db && echo journal
test -e /etc/scanpay/scanpay.toml && echo config
test -e /etc/scanpay/merchant.key && echo key
getent passwd scanpay >/dev/null && echo user`)
	t.Logf("after apt remove: %s", strings.Join(strings.Fields(out), " "))
	for _, want := range []string{"inactive", "no-binary", "journal", "config", "key", "user"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("after apt remove: want %s", want)
		}
	}
	out = m.sh(t, `apt purge -y scanpay >/dev/null 2>&1
dpkg-query -W -f '${db:Status-Status}\n' scanpay 2>/dev/null || echo not-installed
test -s /var/lib/scanpay/journal.db && echo journal
test -e /etc/scanpay/scanpay.toml && echo config || echo no-config
test -e /etc/scanpay/merchant.key && echo key
getent passwd scanpay >/dev/null && echo user
ls /lib/systemd/system/scanpay.service /lib/udev/rules.d/70-scanpay.rules 2>/dev/null || echo no-unit-no-rules`)
	t.Logf("after apt purge: %s", strings.Join(strings.Fields(out), " "))
	for _, want := range []string{"journal", "no-config", "key", "user", "no-unit-no-rules"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("after apt purge: want %s (README, \"Installing\")", want)
		}
	}
}
