// Package nltest runs tests of host networking code in network namespaces
// of their own. It exists only on Linux.
package nltest
