// Package device is the plumbing every device package shares, and no device
// policy: the Keeper that opens a device, runs it until it fails and reopens
// it with capped, jittered backoff; the Observer told when a device comes
// and goes; and Printable, for logging what a device sent. Serial ports live
// in device/serial and evdev input devices in device/input.
package device
