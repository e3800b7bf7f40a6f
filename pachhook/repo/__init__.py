"""Git access (one door, with timeouts), sources (a commit's tree or the working tree), selections and change sets."""
