package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// CredentialName is the systemd credential holding the merchant key
// (LoadCredential=merchant-key:/etc/scanpay/merchant.key).
const CredentialName = "merchant-key"

// The merchant key's format. IOTPay hands out keys of letters and digits
// (it signs with MD5 over "…&key=KEY"); scanpay accepts 8 to 128 of them,
// so a paste error (quotes, "key=", a space, a second line, a BOM) is
// caught at start, not as "signature refused" on every sale.
const (
	MinKeyLength = 8
	MaxKeyLength = 128
	// maxKeyFileSize is what is read at most: a key, its newline and
	// room to say how far off a wrong file is.
	maxKeyFileSize = 1024
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// LoadKey reads the merchant key: from $CREDENTIALS_DIRECTORY/merchant-key
// when systemd provides it, else from gateway.key_file, which must not be
// readable by group or others and must belong to the user running
// scanpay. Either must be a regular file of at most 1 kB holding the key
// and at most one final line ending ("\n" or "\r\n"); see checkKey.
// source says where it came from; the key itself, and the file's content,
// never go into an error.
func (c *Config) LoadKey(getenv func(string) string) (key, source string, err error) {
	if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		source := "systemd credential " + CredentialName
		data, err := readKeyFile(filepath.Join(dir, CredentialName), false)
		switch {
		case err == nil:
			key, err := checkKey(data)
			if err != nil {
				return "", "", fmt.Errorf("merchant key in the %s: %w", source, err)
			}
			return key, source, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", "", fmt.Errorf("merchant key: %s: %w", source, err)
		}
	}
	path := c.Gateway.KeyFile
	if path == "" {
		return "", "", errors.New("gateway.key_file: missing, and no systemd credential " + CredentialName + " (LoadCredential=) was given")
	}
	data, err := readKeyFile(path, true)
	if err != nil {
		return "", "", fmt.Errorf("gateway.key_file: %w", err)
	}
	key, err = checkKey(data)
	if err != nil {
		return "", "", fmt.Errorf("gateway.key_file: %w", err)
	}
	return key, path, nil
}

// readKeyFile reads a key file without blocking on a FIFO or a device
// and checks what it opened (not the path, which could be swapped): a
// regular file, small, and, when private is set, mode 0600 or stricter
// and owned by this user. Errors carry no path: the caller names the key.
func readKeyFile(path string, private bool) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if errors.Is(err, errNotRegular) {
			return nil, fmt.Errorf("%w: it must be a plain file holding the key", err)
		}
		return nil, fmt.Errorf("cannot open it: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	if private {
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("the file is readable by others (mode %04o): chmod 600 it", fi.Mode().Perm())
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return nil, fmt.Errorf("the file belongs to uid %d, not to the user running scanpay (uid %d): chown it", st.Uid, os.Geteuid())
		}
	}
	if fi.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("the file is %d bytes, far longer than a merchant key (%d–%d letters and digits): is it the right file?", fi.Size(), MinKeyLength, MaxKeyLength)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("the file is longer than %d bytes, far longer than a merchant key: is it the right file?", maxKeyFileSize)
	}
	return data, nil
}

// checkKey reads a merchant key from a key file's bytes. Accepted: the
// key alone, 8–128 ASCII letters and digits, optionally followed by one
// line ending ("\n", or "\r\n" from a Windows editor). Everything else is
// refused with what to fix: a byte-order mark, whitespace before or after
// the key (a second newline included), several lines, another character.
// The message says where the problem is, never what the key is.
func checkKey(data []byte) (string, error) {
	if bytes.HasPrefix(data, utf8BOM) {
		return "", errors.New(`the file starts with a byte-order mark (the editor saved it as "UTF-8 with BOM"): save it as plain text, or recreate it with: install -m 600 /dev/stdin FILE`)
	}
	k := data
	if bytes.HasSuffix(k, []byte("\r\n")) {
		k = k[:len(k)-2]
	} else if bytes.HasSuffix(k, []byte("\n")) {
		k = k[:len(k)-1]
	}
	if len(bytes.TrimSpace(k)) == 0 {
		return "", errors.New("the key is empty: put the merchant key from IOTPay in it")
	}
	if isSpace(k[0]) {
		return "", errors.New("the key starts with whitespace: remove the spaces, tabs or blank lines before it")
	}
	if isSpace(k[len(k)-1]) {
		return "", errors.New("the key ends with whitespace: remove the spaces, tabs or blank lines after it (one final newline is fine)")
	}
	if i := bytes.IndexAny(k, "\r\n"); i >= 0 {
		return "", errors.New("the key spans several lines: the file must hold the key on one line")
	}
	for i, c := range k {
		if !isKeyChar(c) {
			return "", fmt.Errorf("character %d of %d is not a letter or digit: an IOTPay key is letters and digits only (check that only the key was pasted, without quotes, spaces or \"key=\")", i+1, len(k))
		}
	}
	if len(k) < MinKeyLength || len(k) > MaxKeyLength {
		return "", fmt.Errorf("the key is %d characters; an IOTPay key is %d–%d letters and digits: check that the whole key was pasted", len(k), MinKeyLength, MaxKeyLength)
	}
	return string(k), nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

func isKeyChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}
