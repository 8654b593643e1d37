package input

// Linux input key codes used by scanners and keypads (linux/input-event-codes.h).
const (
	KeyEsc        = 1
	KeyBackspace  = 14
	KeyTab        = 15
	KeyEnter      = 28
	KeyLeftShift  = 42
	KeyRightShift = 54
	KeyKPAsterisk = 55
	KeySpace      = 57
	KeyCapsLock   = 58
	KeyNumLock    = 69
	KeyKP7        = 71
	KeyKP8        = 72
	KeyKP9        = 73
	KeyKPMinus    = 74
	KeyKP4        = 75
	KeyKP5        = 76
	KeyKP6        = 77
	KeyKPPlus     = 78
	KeyKP1        = 79
	KeyKP2        = 80
	KeyKP3        = 81
	KeyKP0        = 82
	KeyKPDot      = 83
	KeyKPEnter    = 96
	KeyKPSlash    = 98
	KeyDelete     = 111
)

// Event types and values of struct input_event.
const (
	EvSyn = 0x00
	EvKey = 0x01
	EvMsc = 0x04
	EvLed = 0x11
	EvSnd = 0x12

	KeyReleased = 0
	KeyPressed  = 1
	KeyRepeated = 2
)

// usKeys maps key codes to the characters a US layout gives, unshifted and
// shifted. Digits and letters are the same on every layout; punctuation is
// not, which is why scanners must be set to the US layout.
var usKeys = map[uint16][2]rune{
	2: {'1', '!'}, 3: {'2', '@'}, 4: {'3', '#'}, 5: {'4', '$'}, 6: {'5', '%'},
	7: {'6', '^'}, 8: {'7', '&'}, 9: {'8', '*'}, 10: {'9', '('}, 11: {'0', ')'},
	12: {'-', '_'}, 13: {'=', '+'},
	16: {'q', 'Q'}, 17: {'w', 'W'}, 18: {'e', 'E'}, 19: {'r', 'R'}, 20: {'t', 'T'},
	21: {'y', 'Y'}, 22: {'u', 'U'}, 23: {'i', 'I'}, 24: {'o', 'O'}, 25: {'p', 'P'},
	26: {'[', '{'}, 27: {']', '}'},
	30: {'a', 'A'}, 31: {'s', 'S'}, 32: {'d', 'D'}, 33: {'f', 'F'}, 34: {'g', 'G'},
	35: {'h', 'H'}, 36: {'j', 'J'}, 37: {'k', 'K'}, 38: {'l', 'L'},
	39: {';', ':'}, 40: {'\'', '"'}, 41: {'`', '~'}, 43: {'\\', '|'},
	44: {'z', 'Z'}, 45: {'x', 'X'}, 46: {'c', 'C'}, 47: {'v', 'V'}, 48: {'b', 'B'},
	49: {'n', 'N'}, 50: {'m', 'M'},
	51: {',', '<'}, 52: {'.', '>'}, 53: {'/', '?'}, 57: {' ', ' '},
	KeyKP0: {'0', '0'}, KeyKP1: {'1', '1'}, KeyKP2: {'2', '2'}, KeyKP3: {'3', '3'},
	KeyKP4: {'4', '4'}, KeyKP5: {'5', '5'}, KeyKP6: {'6', '6'}, KeyKP7: {'7', '7'},
	KeyKP8: {'8', '8'}, KeyKP9: {'9', '9'}, KeyKPDot: {'.', '.'}, KeyKPMinus: {'-', '-'},
	KeyKPPlus: {'+', '+'}, KeyKPAsterisk: {'*', '*'}, KeyKPSlash: {'/', '/'},
}

// KeyRune returns the character a key gives on a US layout. caps applies
// CapsLock, which shifts letters only.
func KeyRune(code uint16, shift, caps bool) (rune, bool) {
	pair, ok := usKeys[code]
	if !ok {
		return 0, false
	}
	r := pair[0]
	letter := r >= 'a' && r <= 'z'
	if shift != (caps && letter) {
		r = pair[1]
	}
	return r, true
}

// RuneKey is KeyRune's inverse for the main block of keys: the key code and
// whether Shift is needed. The fake scanner types with it.
func RuneKey(r rune) (code uint16, shift bool, ok bool) {
	for c, pair := range usKeys {
		if c >= KeyKP7 { // prefer the main block over the keypad
			continue
		}
		if pair[0] == r {
			return c, false, true
		}
		if pair[1] == r {
			return c, true, true
		}
	}
	return 0, false, false
}
