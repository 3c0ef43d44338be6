// Package codes knows the ISO 3166-1 country codes and the continent each belongs to, as MaxMind
// reports them. It has no dependencies, so that the configuration can check codes without
// linking GeoIP.
package codes

// ContinentOf returns the continent code (AF AN AS EU NA OC SA) of an ISO 3166-1 alpha-2 country
// code, or "" when the code is not assigned. The assignment follows GeoNames, which MaxMind's
// databases use too, so a mirror's configured country lands on the same continent as the clients
// the database places there (Cyprus and Russia in EU, Turkey and the Caucasus in AS).
//
// The table is a switch rather than a map so that it is immutable and needs no initialisation.
func ContinentOf(country string) string {
	switch country {
	case "AO", "BF", "BI", "BJ", "BW", "CD", "CF", "CG", "CI", "CM", "CV", "DJ", "DZ", "EG", "EH",
		"ER", "ET", "GA", "GH", "GM", "GN", "GQ", "GW", "KE", "KM", "LR", "LS", "LY", "MA", "MG",
		"ML", "MR", "MU", "MW", "MZ", "NA", "NE", "NG", "RE", "RW", "SC", "SD", "SH", "SL", "SN",
		"SO", "SS", "ST", "SZ", "TD", "TG", "TN", "TZ", "UG", "YT", "ZA", "ZM", "ZW":
		return "AF"
	case "AQ", "BV", "GS", "HM", "TF":
		return "AN"
	case "AE", "AF", "AM", "AZ", "BD", "BH", "BN", "BT", "CC", "CN", "CX", "GE", "HK", "ID", "IL",
		"IN", "IO", "IQ", "IR", "JO", "JP", "KG", "KH", "KP", "KR", "KW", "KZ", "LA", "LB", "LK",
		"MM", "MN", "MO", "MV", "MY", "NP", "OM", "PH", "PK", "PS", "QA", "SA", "SG", "SY", "TH",
		"TJ", "TL", "TM", "TR", "TW", "UZ", "VN", "YE":
		return "AS"
	case "AD", "AL", "AT", "AX", "BA", "BE", "BG", "BY", "CH", "CY", "CZ", "DE", "DK", "EE", "ES",
		"FI", "FO", "FR", "GB", "GG", "GI", "GR", "HR", "HU", "IE", "IM", "IS", "IT", "JE", "LI",
		"LT", "LU", "LV", "MC", "MD", "ME", "MK", "MT", "NL", "NO", "PL", "PT", "RO", "RS", "RU",
		"SE", "SI", "SJ", "SK", "SM", "UA", "VA",
		// Kosovo has no ISO assignment, but MaxMind reports it as XK, so a client there must
		// still have a continent.
		"XK":
		return "EU"
	case "AG", "AI", "AW", "BB", "BL", "BM", "BQ", "BS", "BZ", "CA", "CR", "CU", "CW", "DM", "DO",
		"GD", "GL", "GP", "GT", "HN", "HT", "JM", "KN", "KY", "LC", "MF", "MQ", "MS", "MX", "NI",
		"PA", "PM", "PR", "SV", "SX", "TC", "TT", "US", "VC", "VG", "VI":
		return "NA"
	case "AS", "AU", "CK", "FJ", "FM", "GU", "KI", "MH", "MP", "NC", "NF", "NR", "NU", "NZ", "PF",
		"PG", "PN", "PW", "SB", "TK", "TO", "TV", "UM", "VU", "WF", "WS":
		return "OC"
	case "AR", "BO", "BR", "CL", "CO", "EC", "FK", "GF", "GY", "PE", "PY", "SR", "UY", "VE":
		return "SA"
	}
	return ""
}

// ValidCountry reports whether code is an assigned ISO 3166-1 alpha-2 code (or XK), upper case.
func ValidCountry(code string) bool { return ContinentOf(code) != "" }

// ValidContinent reports whether code is one of AF AN AS EU NA OC SA.
func ValidContinent(code string) bool {
	switch code {
	case "AF", "AN", "AS", "EU", "NA", "OC", "SA":
		return true
	}
	return false
}
