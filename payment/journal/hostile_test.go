package journal

// Issue 16, item 5: the code secret leaves the journal. A copy of the
// journal alone (its files journal.db, -wal, -shm) must not hold the key
// of the code hashes, or the 12 hidden digits of a masked WeChat code
// could be found offline by trying all 10^12.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// journalFiles is everything a copy of "journal.db*" takes along.
func journalFiles(t *testing.T, path string) []byte {
	t.Helper()
	var all []byte
	matches, _ := filepath.Glob(path + "*")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

func hashCode(secret []byte, code string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

// assertNoSecret fails when the journal's files hold the secret, in hex
// or raw, or meta still names it.
func assertNoSecret(t *testing.T, path string, secret []byte) {
	t.Helper()
	all := journalFiles(t, path)
	if bytes.Contains(all, []byte(hex.EncodeToString(secret))) || bytes.Contains(all, secret) {
		t.Fatal("the journal's files hold the code secret")
	}
}

func TestHostileJournalAloneSaysNothing(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	secret := j.Secret()
	if len(secret) != secretSize {
		t.Fatalf("secret of %d bytes", len(secret))
	}
	const code = "134567890123456789"
	if _, err := j.AddOrder(ctx, NewOrder{TerminalID: "L01", Amount: 100, Currency: "CAD", Channel: "WX_MICROPAY",
		CodeMasked: "13****6789", CodeHash: hashCode(secret, code), Source: "keypad"}, num); err != nil {
		t.Fatal(err)
	}
	var n int
	j.db.QueryRow(`SELECT COUNT(*) FROM meta WHERE key = 'code_secret'`).Scan(&n)
	if n != 0 {
		t.Fatal("meta holds the code secret")
	}
	assertNoSecret(t, path, secret)
	// The secret is in its own private file, and it is what the hashes
	// need: reopening reads it back.
	file := SecretPath(path)
	if filepath.Base(file) != "journal.code-secret" {
		t.Fatalf("secret file %s", file)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", fi, err)
	}
	j.Close()
	j2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if used, _ := j2.CodeUsed(ctx, hashCode(j2.Secret(), code)); !used || j2.SecretRenewed() {
		t.Fatalf("code not recognised after reopen (renewed %v)", j2.SecretRenewed())
	}
	// A read-only open (reports) neither needs nor touches it.
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if ro.Secret() != nil {
		t.Fatal("read-only journal carries the secret")
	}
}

// v1Journal writes an old journal whose meta holds the code secret, with
// an order hashed with it, and returns the secret.
func v1Journal(t *testing.T, path string) []byte {
	t.Helper()
	db := schemaV1Journal(t, path)
	defer db.Close()
	secret, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	// Many writes to meta leave copies of its page behind, as a busy lane
	// does with its order counter.
	for i := range 50 {
		db.Exec(`UPDATE meta SET value = ? WHERE key = 'refund_counter'`, i)
	}
	if _, err := db.Exec(`UPDATE orders SET code_hash = ? WHERE mch_order_no = 'L01-00000001-AAAAA'`, hashCode(secret, "134567890123456789")); err != nil {
		t.Fatal(err)
	}
	return secret
}

// An existing journal's secret moves to the file and out of every byte
// of the journal, whatever step a crash interrupted: each open finishes
// the move, and the hashes already there keep matching.
func TestHostileSecretMigration(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, path string, secret []byte)
	}{
		{"clean", func(*testing.T, string, []byte) {}},
		{"crash after the file, before the row was dropped", func(t *testing.T, path string, secret []byte) {
			os.WriteFile(SecretPath(path), []byte(hex.EncodeToString(secret)+"\n"), 0o600)
		}},
		{"crash while writing the file", func(t *testing.T, path string, secret []byte) {
			os.WriteFile(SecretPath(path)+".new", []byte("0011"), 0o600)
		}},
		{"a different file beside an old journal", func(t *testing.T, path string, secret []byte) {
			os.WriteFile(SecretPath(path), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal.db")
			secret := v1Journal(t, path)
			if !bytes.Contains(journalFiles(t, path), []byte(hex.EncodeToString(secret))) {
				t.Fatal("test setup: the old journal should hold the secret")
			}
			tc.crash(t, path, secret)
			j, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(j.Secret(), secret) || j.SecretRenewed() {
				t.Fatalf("secret %x after the move (renewed %v)", j.Secret(), j.SecretRenewed())
			}
			if used, _ := j.CodeUsed(ctx, hashCode(j.Secret(), "134567890123456789")); !used {
				t.Fatal("a code used before the move is not recognised")
			}
			assertNoSecret(t, path, secret) // while open, WAL included
			j.Close()
			assertNoSecret(t, path, secret)
			if b, _ := os.ReadFile(SecretPath(path)); string(b) != hex.EncodeToString(secret)+"\n" {
				t.Fatalf("secret file holds %q", b)
			}
		})
	}
	// A failure while writing the file leaves the journal as it was; the
	// next open moves the secret.
	path := filepath.Join(t.TempDir(), "journal.db")
	secret := v1Journal(t, path)
	blocker := SecretPath(path) + ".new"
	os.MkdirAll(filepath.Join(blocker, "x"), 0o700) // the temporary file cannot be made
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("opened although the secret could not be written")
	}
	os.RemoveAll(blocker)
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !bytes.Equal(j.Secret(), secret) {
		t.Fatal("secret changed after a failed move")
	}
}

// A journal whose secret file is lost gets a new secret and says so; a
// damaged one is refused with what to do.
func TestSecretLostOrDamaged(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	if j.SecretRenewed() {
		t.Fatal("a new journal reports a renewed secret")
	}
	j.AddOrder(ctx, newOrder("h", 100), num)
	old := j.Secret()
	j.Close()
	os.Remove(SecretPath(path))
	j2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !j2.SecretRenewed() || bytes.Equal(j2.Secret(), old) {
		t.Fatal("a lost secret was not renewed and reported")
	}
	j2.Close()
	os.WriteFile(SecretPath(path), []byte("not hex\n"), 0o600)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("damaged secret: %v", err)
	}
}

// An operator command run as root (sudo scanpay refund) that makes or
// moves the secret leaves it owned like the journal, so the service,
// running as its own user, can still read it.
func TestSecretOwnedLikeTheJournal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	j, path := openTemp(t, Options{})
	j.Close()
	for _, f := range []string{path, filepath.Dir(path)} {
		if err := os.Chown(f, 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(SecretPath(path))
	j2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	j2.Close()
	fi, err := os.Stat(SecretPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 4321 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file owned by %d:%d, mode %v", st.Uid, st.Gid, fi.Mode())
	}
}
