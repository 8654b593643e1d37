// Package input reads evdev input devices for the keypad and the scanner:
// a DeviceSpec finds a device by path, name or USB vendor:product; a
// KeyboardReader grabs it for exclusive use, delivers its key events and
// reopens it after an unplug. It also holds the Linux key codes, the raw
// struct input_event layouts (24 bytes on 64-bit, 16 on 32-bit ARM) for
// recordings, and TypeCode, which turns text into the key events a
// keyboard-wedge scanner sends. What the keys mean is the caller's business.
package input
