package journal

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The code secret keys the hash kept of each payment code (duplicate
// detection). It lives in its own file beside the journal, mode 0600,
// never in the journal: the journal keeps a masked code (2 + 4 digits)
// and the keyed hash, so with the key beside them the 12 hidden digits
// of a WeChat code could be found offline by trying them all. A copy of
// the journal alone (a backup, a support case) now says nothing about a
// code. Journals of earlier versions kept it in meta; opening one for
// writing moves it out (see loadSecret).

// SecretPath is where the code secret of the journal at path lives:
// "journal.db" → "journal.code-secret", in the same directory, so a
// copy of "journal.db*" does not take it along.
func SecretPath(path string) string {
	base := filepath.Base(path)
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return filepath.Join(filepath.Dir(path), base+".code-secret")
}

const secretSize = 32

// loadSecret sets j.secret: from the journal's meta table while an older
// journal still has it there (then moved out), else from the secret
// file, else a new one. Moving it out is two durable steps, the file and
// then the row's deletion, and each open redoes what a crash left
// undone: with the row still there, the row wins and the file is
// (re)written with it, so the hashes already in the journal keep
// matching.
func (j *Journal) loadSecret(damaged func(error) error) error {
	file := SecretPath(j.path)
	var inMeta string
	err := j.db.QueryRow(`SELECT value FROM meta WHERE key = 'code_secret'`).Scan(&inMeta)
	switch {
	case err == nil:
		s, derr := hex.DecodeString(inMeta)
		if derr != nil || len(s) < 16 {
			return damaged(errors.New("bad code secret"))
		}
		if err := j.writeSecret(file, s); err != nil {
			return err
		}
		if err := j.dropMetaSecret(); err != nil {
			return err
		}
		j.secret = s
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return damaged(fmt.Errorf("meta: %w", err))
	}
	s, err := readSecret(file)
	switch {
	case err == nil:
		j.secret = s
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	// No secret anywhere: a new journal, or one whose secret file was
	// lost (a journal restored onto a new card). Codes used before cannot
	// be recognised as used any more; the daemon says so (SecretRenewed).
	var orders int
	if err := j.db.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&orders); err != nil {
		return damaged(err)
	}
	s = make([]byte, secretSize)
	if _, err := rand.Read(s); err != nil {
		return fmt.Errorf("code secret: %w", err)
	}
	if err := j.writeSecret(file, s); err != nil {
		return err
	}
	j.secret, j.secretRenewed = s, orders > 0
	return nil
}

// SecretRenewed reports that this open made a new code secret for a
// journal that already holds orders: codes used before it can be used
// again as far as this lane can tell (the wallets refuse a used code
// anyway, and a payment code lives about a minute).
func (j *Journal) SecretRenewed() bool { return j.secretRenewed }

func readSecret(file string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("code secret %s: %w (it must be readable by the user running scanpay)", file, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("code secret %s: %w", file, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return nil, fmt.Errorf("code secret %s: %w", file, err)
	}
	s, derr := hex.DecodeString(strings.TrimSpace(string(b)))
	if !fi.Mode().IsRegular() || derr != nil || len(s) < 16 {
		return nil, fmt.Errorf("code secret %s is damaged: refusing to start; move it away and start again to make a new one (payment codes used before will then not be recognised as used)", file)
	}
	return s, nil
}

// writeSecret writes s to file durably: a temporary file (0600, owned
// like the journal when root writes it, so an operator command run with
// sudo does not lock the service out), fsync, rename, fsync of the
// directory.
func (j *Journal) writeSecret(file string, s []byte) error {
	fail := func(err error) error { return storage("write code secret "+file, err) }
	tmp := file + ".new"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(err)
	}
	_, err = f.WriteString(hex.EncodeToString(s) + "\n")
	if err == nil && os.Geteuid() == 0 {
		if fi, serr := os.Stat(j.path); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				err = f.Chown(int(st.Uid), int(st.Gid))
			}
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err == nil {
		err = syncFile(filepath.Dir(file))
	}
	if err != nil {
		os.Remove(tmp)
		return fail(err)
	}
	return nil
}

// dropMetaSecret deletes the secret from meta, with secure_delete so the
// row's bytes are overwritten rather than left in a free page, and
// checkpoints the WAL, whose frames hold earlier copies of the meta page,
// down to nothing.
func (j *Journal) dropMetaSecret() error {
	ctx := context.Background()
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return storage("drop code secret", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return storage("drop code secret", err)
	}
	defer conn.ExecContext(ctx, `PRAGMA secure_delete = OFF`)
	if _, err := conn.ExecContext(ctx, `DELETE FROM meta WHERE key = 'code_secret'`); err != nil {
		return storage("drop code secret", err)
	}
	// When another process reads the journal meanwhile (busy), the frames
	// it holds are overwritten by later commits and checkpoints instead.
	var busy, logFrames, done int
	if err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done); err != nil {
		return storage("drop code secret: checkpoint", err)
	}
	return nil
}
