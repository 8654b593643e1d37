// Package scanner turns scanner input into payment codes: USB HID scanners
// read through evdev (key decoding, terminators, idle timeout, length cap,
// exclusive grab, hotplug reopen) and serial scanners (line framing), plus
// the wallet table that maps a code to its IOTPay channel.
package scanner
