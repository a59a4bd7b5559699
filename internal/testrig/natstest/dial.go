package natstest

import (
	"fmt"
	"net"
	"time"
)

func netDial(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
}
