package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
)

func main() {
	name, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	name = strings.TrimSpace(name)
	if name == "" {
		name = "world"
	}
	fmt.Printf("hello, %s, from Go %s\n", name, runtime.Version())
}
