# The evdev scanner path on a real kernel: a virtual keyboard made through
# /dev/uinput types codes; the reader finds it by name, grabs it, decodes
# it, and reopens it after it is destroyed and created again.
export SCANPAY_VM=1 SCANPAY_FAKESCANNER=/scanpay/fakescanner
/scanpay/scanner.test -test.run '^TestVM' -test.v -test.timeout 120s
