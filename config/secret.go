package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// CredentialName is the systemd credential holding the merchant key
// (LoadCredential=merchant-key:/etc/scanpay/merchant.key).
const CredentialName = "merchant-key"

// LoadKey reads the merchant key: from $CREDENTIALS_DIRECTORY/merchant-key
// when systemd provides it, else from gateway.key_file, which must not be
// readable by group or others and must belong to the user running
// scanpay. Trailing whitespace is ignored. source says where it came from;
// the key itself never goes into an error.
func (c *Config) LoadKey(getenv func(string) string) (key, source string, err error) {
	if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		path := filepath.Join(dir, CredentialName)
		if data, err := os.ReadFile(path); err == nil {
			return clean(data, "systemd credential "+CredentialName)
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("merchant key: read %s: %w", path, err)
		}
	}
	path := c.Gateway.KeyFile
	if path == "" {
		return "", "", errors.New("gateway.key_file: missing, and no systemd credential " + CredentialName + " (LoadCredential=) was given")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("gateway.key_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", "", fmt.Errorf("gateway.key_file: %s is readable by others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return "", "", fmt.Errorf("gateway.key_file: %s belongs to uid %d, not to the user running scanpay (uid %d): chown it", path, st.Uid, os.Geteuid())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("gateway.key_file: %w", err)
	}
	return clean(data, path)
}

func clean(data []byte, source string) (string, string, error) {
	key := strings.TrimRight(string(data), " \t\r\n")
	if key == "" {
		return "", "", fmt.Errorf("merchant key in %s is empty", source)
	}
	if strings.ContainsAny(key, "\r\n\x00") {
		return "", "", fmt.Errorf("merchant key in %s spans several lines", source)
	}
	return key, source, nil
}
