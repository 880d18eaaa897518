# Renders one BOSH job template the way the director does: the job spec's property defaults merged
# with the given properties, `p`/`if_p`/`spec` in scope, ERB with "-" trim mode.
#   ruby bosh_render.rb JOB_DIR TEMPLATE PROPERTIES_JSON
require "erb"
require "json"
require "yaml"
require "ostruct"
require "shellwords"

job_dir, template, props_json = ARGV
job_spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
given = JSON.parse(props_json)

def dig(hash, dotted)
  dotted.split(".").reduce(hash) { |h, k| h.is_a?(Hash) && h.key?(k) ? h[k] : (return :missing) }
end

PROPS = {}
(job_spec["properties"] || {}).each do |name, decl|
  value = dig(given, name)
  value = decl["default"] if value == :missing
  PROPS[name] = value unless value == :missing || value.nil? && !decl.key?("default")
end

def p(name, *default)
  return PROPS[name] if PROPS.key?(name)
  return default.first unless default.empty?
  raise "Can't find property '#{name}'"
end

def if_p(*names)
  values = names.map { |n| PROPS.key?(n) ? PROPS[n] : (return) }
  yield(*values)
end

def spec
  OpenStruct.new(name: "diego-cell", id: "0d1c9a7e", index: 0, az: "z1", deployment: "cf",
                 address: "10.0.16.5", ip: "10.0.16.5")
end

print ERB.new(File.read(File.join(job_dir, "templates", template)), trim_mode: "-").result(binding)
