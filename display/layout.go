// Package display shows the lane's screens on a customer line display
// (Epson ESC/POS or CD5220 command sets, or a console rendering for
// development and the demo) and plays beeper patterns (GPIO buzzer, evdev
// tone device, the display's bell). A display keeps a two-line framebuffer,
// writes only lines that changed, reopens its port after an unplug (its
// tty through device/serial, its reopen loop through device.Keeper), and
// never lets a dead device hold up the lane. The GPIO buzzer and the tty
// are Linux-only (gpio_linux.go, device/serial's tty_linux.go).
package display

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/scanpay/scanpay/payment"
)

// Lines is what a two-line display shows.
type Lines [2]string

// Layout turns screens into two lines of exactly Width ASCII characters.
type Layout struct {
	Width int // characters per line (20 on most pole displays)
}

// Money formats integer cents: 2865 → "$28.65". CAD and USD both use "$".
func Money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s$%d.%02d", sign, cents/100, cents%100)
}

// Render lays out a screen.
func (l Layout) Render(s payment.Screen) Lines {
	w := l.Width
	if w <= 0 {
		w = 20
	}
	amt := Money(s.Amount)
	reason := func(fallback string) string {
		r := ASCII(s.Reason)
		// A gateway message in a script the display cannot show is worse
		// than a plain fallback.
		if r == "" || strings.Count(r, "?") > len(r)/3 {
			return fallback
		}
		return capitalize(r)
	}
	var a, b string
	switch s.Kind {
	case payment.ScreenIdle:
		a, b = center("Welcome", w), center("WeChat Alipay UPI", w)
	case payment.ScreenTyping:
		a, b = spread("Amount", amt, w), ""
	case payment.ScreenAwaitingCode:
		a, b = spread("Total", amt, w), "Show payment code"
	case payment.ScreenProcessing:
		a, b = spread("Total", amt, w), "Processing..."
	case payment.ScreenConfirmOnPhone:
		a, b = spread("Total", amt, w), "Confirm on phone"
	case payment.ScreenApproved:
		a, b = spread("Approved", amt, w), spread(wallet(s.Wallet), "Thank you", w)
	case payment.ScreenDeclined:
		a, b = spread("Declined", amt, w), reason("Not charged")
	case payment.ScreenNotConfirmed:
		a, b = spread("Not confirmed", amt, w), "Do not pay again"
	case payment.ScreenUnsupported:
		a, b = "Code not supported", "Use WeChat or Alipay"
	case payment.ScreenCodeUsed:
		a, b = "Code already used", "Refresh code in app"
	case payment.ScreenEnterAmountFirst:
		a, b = "Wait for the amount", "then scan again"
	case payment.ScreenOffline:
		a, b = "Gateway offline", "Checking payment..."
	case payment.ScreenRefundDone:
		a, b = spread("Refunded", amt, w), "Refund complete"
	case payment.ScreenRefundFailed:
		a, b = spread("Refund failed", amt, w), reason("Call staff")
	case payment.ScreenCancelled:
		a, b = spread("Cancelled", amt, w), ""
		if !strings.EqualFold(s.Reason, "cancelled") {
			b = reason("")
		}
	case payment.ScreenRecovering:
		a, b = "Checking last sale", spread("", amt, w)
	case payment.ScreenOutOfService:
		a, b = "Out of service", "Please call staff"
	case payment.ScreenWaitingClock:
		a, b = "Waiting for clock", "No sales yet"
	case payment.ScreenOverLimit:
		a, b = "Over the limit", spread("Max", amt, w)
	default:
		a, b = "", ""
	}
	return Lines{fit(a, w), fit(b, w)}
}

func wallet(name string) string {
	if name == "" {
		return "Paid"
	}
	return ASCII(name)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// fit pads or cuts s to exactly w characters.
func fit(s string, w int) string {
	s = ASCII(s)
	if len(s) > w {
		return s[:w]
	}
	return s + strings.Repeat(" ", w-len(s))
}

func center(s string, w int) string {
	if len(s) >= w {
		return s
	}
	return strings.Repeat(" ", (w-len(s))/2) + s
}

// spread puts left and right at the two ends of a line; when both do not
// fit, right (the amount) wins and left is cut.
func spread(left, right string, w int) string {
	if len(right) >= w {
		return right[:w]
	}
	room := w - len(right) - 1
	if room < 0 {
		room = 0
	}
	if len(left) > room {
		left = left[:room]
	}
	return left + strings.Repeat(" ", w-len(left)-len(right)) + right
}

var translit = map[rune]string{
	'à': "a", 'á': "a", 'â': "a", 'ã': "a", 'ä': "a", 'å': "a", 'æ': "ae", 'ç': "c",
	'è': "e", 'é': "e", 'ê': "e", 'ë': "e", 'ì': "i", 'í': "i", 'î': "i", 'ï': "i",
	'ñ': "n", 'ò': "o", 'ó': "o", 'ô': "o", 'õ': "o", 'ö': "o", 'ø': "o", 'œ': "oe",
	'ù': "u", 'ú': "u", 'û': "u", 'ü': "u", 'ý': "y", 'ÿ': "y", 'ß': "ss",
	'À': "A", 'Á': "A", 'Â': "A", 'Ä': "A", 'Å': "A", 'Æ': "AE", 'Ç': "C", 'È': "E",
	'É': "E", 'Ê': "E", 'Ë': "E", 'Î': "I", 'Ï': "I", 'Ñ': "N", 'Ô': "O", 'Ö': "O",
	'Ø': "O", 'Œ': "OE", 'Ù': "U", 'Û': "U", 'Ü': "U",
	'‘': "'", '’': "'", '“': "\"", '”': "\"", '–': "-", '—': "-", '…': "...", '€': "EUR", '¥': "Y", '£': "L",
	'，': ",", '。': ".", '：': ":", '（': "(", '）': ")",
}

// ASCII transliterates s to printable ASCII: accented Latin letters lose
// their accents, control characters go, anything else becomes '?'. No
// UTF-8 byte ever reaches a display.
func ASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteByte('?')
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			// control characters carry nothing a customer should see
		default:
			if t, ok := translit[r]; ok {
				b.WriteString(t)
			} else {
				b.WriteByte('?')
			}
		}
	}
	return b.String()
}
