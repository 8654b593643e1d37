package display

import evdev "github.com/holoplot/go-evdev"

type evdevEvent = evdev.InputEvent
