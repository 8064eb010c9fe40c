package tailcfg

// DERPMap describes the DERP relay regions of a tailnet.
type DERPMap struct {
	HomeParams         *DERPHomeParams     `json:",omitempty"`
	Regions            map[int]*DERPRegion // JSON object keys are region IDs as strings
	OmitDefaultRegions bool                `json:"omitDefaultRegions,omitempty"`
}

// DERPHomeParams tunes home-region choice.
type DERPHomeParams struct {
	// RegionScore multiplies a region's measured latency when choosing a home;
	// values <= 0 are ignored.
	RegionScore map[int]float64 `json:",omitempty"`
}

// DERPRegion is a set of DERP servers in one place.
type DERPRegion struct {
	RegionID        int
	RegionCode      string
	RegionName      string
	Latitude        float64 `json:",omitempty"`
	Longitude       float64 `json:",omitempty"`
	Avoid           bool    `json:",omitempty"`
	NoMeasureNoHome bool    `json:",omitempty"`
	Nodes           []*DERPNode
}

// DERPNode is one DERP (and usually STUN) server.
type DERPNode struct {
	Name             string
	RegionID         int
	HostName         string
	CertName         string `json:",omitempty"`
	IPv4             string `json:",omitempty"`
	IPv6             string `json:",omitempty"`
	STUNPort         int    `json:",omitempty"` // 0 means 3478; -1 disables STUN
	STUNOnly         bool   `json:",omitempty"`
	DERPPort         int    `json:",omitempty"` // 0 means 443
	InsecureForTests bool   `json:",omitempty"`
	STUNTestIP       string `json:",omitempty"`
	CanPort80        bool   `json:",omitempty"`
}
