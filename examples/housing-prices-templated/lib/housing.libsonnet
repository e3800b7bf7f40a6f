// What every regression pipeline shares. pachhook replaces the tag with the one it
// builds, so the tag written here does not matter.
{
  image: "docker.io/acme/housing-prices:1.0.0",
  regression(input):: ["python3", "/code/regression.py", "--input", input, "--output", "/pfs/out/"],
}
