package tcp

import "math"

// CUBIC (RFC 9438): after a loss the window grows along a cubic curve
// that is concave up to the window of the last loss, W_max, and convex
// beyond, with a Reno-friendly floor; the window is cut by β = 0.7.

const (
	cubicC    = 0.4
	cubicBeta = 0.7
)

// cubicAvoid grows the window in congestion avoidance for acked bytes.
func (c *Conn) cubicAvoid(acked int, now int64) {
	cu := &c.cc
	mss := float64(c.mss)
	cw := float64(c.cwnd) / mss
	if cu.epoch == 0 {
		cu.epoch = now
		if cw < cu.wMax {
			cu.k = math.Cbrt((cu.wMax - cw) / cubicC)
			cu.origin = cu.wMax
		} else {
			cu.k, cu.origin = 0, cw
		}
		cu.wEst = cw
	}
	// The target is where the curve will be one round trip from now.
	t := float64(now-cu.epoch+int64(c.srtt))/1e9 - cu.k
	target := min(max(cu.origin+cubicC*t*t*t, cw), 1.5*cw)

	// The window standard TCP would have (RFC 9438, section 4.3).
	alpha := 3 * (1 - cubicBeta) / (1 + cubicBeta)
	if cu.wEst >= cu.cwndPrior {
		alpha = 1
	}
	cu.wEst += alpha * float64(acked) / float64(c.cwnd)

	var inc float64 // bytes
	if cu.wEst > target {
		inc = (cu.wEst - cw) * mss
	} else {
		inc = (target - cw) / cw * float64(acked)
	}
	cu.frac += inc
	if cu.frac >= 1 {
		whole := math.Floor(cu.frac)
		c.cwnd += int(whole)
		cu.frac -= whole
	}
}

// cubicCongestion returns ssthresh after a loss and remembers W_max, less
// if the window had not regained the last W_max (fast convergence).
func (c *Conn) cubicCongestion() int {
	cu := &c.cc
	cw := float64(c.cwnd) / float64(c.mss)
	if cw < cu.wMax {
		cu.wMax = cw * (1 + cubicBeta) / 2
	} else {
		cu.wMax = cw
	}
	cu.cwndPrior = cw
	cu.epoch, cu.frac = 0, 0
	return max(int(float64(c.cwnd)*cubicBeta), 2*c.mss)
}
