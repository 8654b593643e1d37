// Package scanner turns scanner input into payment codes, and nothing else:
// the HID scanner (a keyboard wedge read through device/input: key
// decoding with Shift and CapsLock, terminators, idle timeout, length cap,
// AIM prefixes) and the serial scanner (line framing over device/serial).
// Both reopen their device through device.Keeper and hand each code to a
// Sink, as the keypad hands its amounts to keypad.Sink. Which wallet a code
// belongs to is payment's business.
package scanner
