/** Code tables the mapping needs: MDC (IEEE 11073-10101) vital signs → LOINC, MDC units → UCUM, plain UCUM units. */
export const MDC_SYSTEM = 'urn:iso:std:iso:11073:10101';
/** The EUI-64 identifier system used by src/devices for device identities. */
export const EUI64_SYSTEM = 'urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680';

// Vital signs per the FHIR vital-signs profile (and IHE PCD's Rosetta table).
const VITALS: Record<string, { code: string; display: string }> = {
  MDC_PULS_OXIM_SAT_O2: { code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry' },
  MDC_SAT_O2: { code: '2708-6', display: 'Oxygen saturation in Arterial blood' },
  MDC_ECG_HEART_RATE: { code: '8867-4', display: 'Heart rate' },
  MDC_ECG_CARD_BEAT_RATE: { code: '8867-4', display: 'Heart rate' },
  MDC_PULS_RATE: { code: '8867-4', display: 'Heart rate' },
  MDC_PULS_OXIM_PULS_RATE: { code: '8889-8', display: 'Heart rate by Pulse oximetry' },
  MDC_BLD_PULS_RATE_INV: { code: '8867-4', display: 'Heart rate' },
  MDC_PRESS_BLD_NONINV_SYS: { code: '8480-6', display: 'Systolic blood pressure' },
  MDC_PRESS_BLD_NONINV_DIA: { code: '8462-4', display: 'Diastolic blood pressure' },
  MDC_PRESS_BLD_NONINV_MEAN: { code: '8478-0', display: 'Mean blood pressure' },
  MDC_PRESS_BLD_ART_ABP_SYS: { code: '8480-6', display: 'Systolic blood pressure' },
  MDC_PRESS_BLD_ART_ABP_DIA: { code: '8462-4', display: 'Diastolic blood pressure' },
  MDC_PRESS_BLD_ART_ABP_MEAN: { code: '8478-0', display: 'Mean blood pressure' },
  MDC_RESP_RATE: { code: '9279-1', display: 'Respiratory rate' },
  MDC_TTHOR_RESP_RATE: { code: '9279-1', display: 'Respiratory rate' },
  MDC_AWAY_RESP_RATE: { code: '9279-1', display: 'Respiratory rate' },
  MDC_TEMP: { code: '8310-5', display: 'Body temperature' },
  MDC_TEMP_BODY: { code: '8310-5', display: 'Body temperature' },
  MDC_TEMP_ORAL: { code: '8331-1', display: 'Oral temperature' },
  MDC_MASS_BODY_ACTUAL: { code: '29463-7', display: 'Body weight' },
  MDC_LEN_BODY_ACTUAL: { code: '8302-2', display: 'Body height' },
};
const VITALS_BY_NUMBER: Record<string, string> = {
  '150456': 'MDC_PULS_OXIM_SAT_O2',
  '147842': 'MDC_ECG_HEART_RATE',
  '149530': 'MDC_PULS_OXIM_PULS_RATE',
  '150021': 'MDC_PRESS_BLD_NONINV_SYS',
  '150022': 'MDC_PRESS_BLD_NONINV_DIA',
  '150023': 'MDC_PRESS_BLD_NONINV_MEAN',
  '150037': 'MDC_PRESS_BLD_ART_ABP_SYS',
  '150038': 'MDC_PRESS_BLD_ART_ABP_DIA',
  '150039': 'MDC_PRESS_BLD_ART_ABP_MEAN',
  '151562': 'MDC_RESP_RATE',
  '151578': 'MDC_TTHOR_RESP_RATE',
  '150344': 'MDC_TEMP',
  '188736': 'MDC_MASS_BODY_ACTUAL',
};

export function vitalSignLoinc(code: string, name: string): { code: string; display: string } | undefined {
  return VITALS[name] ?? VITALS[VITALS_BY_NUMBER[code] ?? ''];
}

const MDC_UNITS: Record<string, string> = {
  MDC_DIM_PERCENT: '%',
  MDC_DIM_BEAT_PER_MIN: '/min',
  MDC_DIM_RESP_PER_MIN: '/min',
  MDC_DIM_MMHG: 'mm[Hg]',
  MDC_DIM_KILO_PASCAL: 'kPa',
  MDC_DIM_DEGC: 'Cel',
  MDC_DIM_FAHR: '[degF]',
  MDC_DIM_MILLI_SEC: 'ms',
  MDC_DIM_SEC: 's',
  MDC_DIM_MILLI_L: 'mL',
  MDC_DIM_MILLI_L_PER_HR: 'mL/h',
  MDC_DIM_X_L_PER_MIN: 'L/min',
  MDC_DIM_KILO_G: 'kg',
  MDC_DIM_CENTI_M: 'cm',
  MDC_DIM_MILLI_VOLT: 'mV',
  MDC_DIM_DIMLESS: '1',
};

export function mdcUnitToUcum(name: string): string | undefined {
  return MDC_UNITS[name];
}

// Units that are already valid UCUM as commonly sent by labs.
const PLAIN_UCUM = new Set([
  '%', 'g/dL', 'mg/dL', 'g/L', 'mg/L', 'ug/L', 'ng/mL', 'pg/mL', 'mmol/L', 'umol/L', 'nmol/L', 'mol/L', 'meq/L', 'mEq/L',
  'U/L', 'IU/L', '[IU]/L', 'fL', 'pg', 'g', 'kg', 'mg', 'mL', 'L', 'dL', 'cm', 'mm', 'm', 's', 'min', 'h', '/min', 'mm[Hg]',
  'Cel', '10*3/uL', '10*6/uL', '10*9/L', '10*12/L', '/uL', 'mL/min', 'mm/h', 'ratio', '1', 'kg/m2', 'ms', 'mV', 'kPa',
]);

export function ucumUnit(unit: string, fixes: Record<string, string>): string | undefined {
  if (!unit) return undefined;
  if (PLAIN_UCUM.has(unit)) return unit;
  return fixes[unit.toLowerCase()];
}
